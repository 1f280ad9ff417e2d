"""Fixtures for the model tests (shared builders live in tests/train/tiny.py)."""

from __future__ import annotations

import pytest

from tests.train.tiny import sentencepiece_tokenizer


@pytest.fixture(scope="session")
def sp_tokenizer(mirror, tmp_path_factory):
    return sentencepiece_tokenizer(mirror, tmp_path_factory.mktemp("sp"))
