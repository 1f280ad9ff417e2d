"""Fixtures for the training tests: tokenizers, tiny models and parallel shards built from the mirror."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.train.tatoeba_shards import tatoeba_pairs, write_shards
from tests.train.tiny import LANGS, byte_level_tokenizer, save_model, sentencepiece_tokenizer, tiny_causal_lm


@pytest.fixture(scope="session")
def sp_tokenizer(mirror, tmp_path_factory):
    return sentencepiece_tokenizer(mirror, tmp_path_factory.mktemp("sp"))


@pytest.fixture(scope="session")
def bpe_tokenizer(mirror):
    return byte_level_tokenizer(mirror)


@pytest.fixture(scope="session")
def shards(mirror, tmp_path_factory) -> Path:
    """Train shards of 60 Tatoeba pairs per language (de, fr, ru, zh; English on the other side)."""
    return write_shards(tmp_path_factory.mktemp("shards"), {lang: tatoeba_pairs(mirror, lang, 60, skip=1000) for lang in LANGS})


@pytest.fixture(scope="session")
def tiny_llama_dir(sp_tokenizer, tmp_path_factory) -> Path:
    """A 3-layer Llama checkpoint with the SentencePiece tokenizer."""
    return save_model(tiny_causal_lm("llama", sp_tokenizer), sp_tokenizer, tmp_path_factory.mktemp("llama"))
