"""Tokenised examples as a cached Arrow artefact: equal to a fresh encode, reused without encoding,
keyed by the tokenizer's and the rows' content, waited for by the other processes, rebuilt when damaged."""

from __future__ import annotations

import threading

import pytest

from alignx.data import tokenised
from alignx.data.instructions import encode_rows, translation_rows
from alignx.data.schema import read_split
from alignx.data.tokenised import TokenisedExamples, tokenised_examples
from tests.train.tiny import LANGS

LANGUAGES = ["en", *LANGS]


@pytest.fixture()
def rows(shards):
    return translation_rows(read_split(shards, "train"), "en", False).head(120).reset_index(drop=True)


def test_cached_examples_equal_a_fresh_encode_and_are_reused(sp_tokenizer, bpe_tokenizer, rows, tmp_path, monkeypatch):
    fresh = encode_rows(sp_tokenizer, rows, 48, LANGUAGES)
    cached = tokenised_examples(sp_tokenizer, rows, 48, LANGUAGES, tmp_path)
    assert len(cached) == len(fresh) and [cached[i] for i in range(len(cached))] == fresh
    assert cached.lengths() == [len(ex.encoded.input_ids) for ex in fresh]
    assert cached.with_both_spans() == sum(e.encoded.src_span is not None and e.encoded.tgt_span is not None
                                           for e in fresh) < len(fresh)  # max_length 48 cuts some spans
    files = sorted(tmp_path.glob("examples-*.arrow"))
    assert len(files) == 1 and not list(tmp_path.glob(".*"))  # no temporary file left

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again although the examples are cached")

    monkeypatch.setattr(tokenised, "encode_rows", no_encoding)
    again = tokenised_examples(sp_tokenizer, rows, 48, LANGUAGES, tmp_path)
    assert again[5] == fresh[5] and again.path == files[0]
    monkeypatch.undo()

    changed = rows.copy()
    changed.loc[3, "input"] = changed.loc[3, "input"] + " !"
    for tok, table, length in ((sp_tokenizer, changed, 48), (sp_tokenizer, rows, 64), (bpe_tokenizer, rows, 48)):
        tokenised_examples(tok, table, length, LANGUAGES, tmp_path)
    assert len(list(tmp_path.glob("examples-*.arrow"))) == 4  # a changed row, length or tokenizer: a new file

    files[0].write_bytes(files[0].read_bytes()[:100])  # damaged: the main process encodes it again
    assert [x for x in tokenised_examples(sp_tokenizer, rows, 48, LANGUAGES, tmp_path)] == fresh


def test_other_processes_wait_for_the_main_ones_file(sp_tokenizer, rows, tmp_path):
    got: list[TokenisedExamples] = []
    waiter = threading.Thread(target=lambda: got.append(
        tokenised_examples(sp_tokenizer, rows, 48, LANGUAGES, tmp_path, is_main=False)))
    waiter.start()
    waiter.join(1.0)
    assert waiter.is_alive()  # nothing to map yet: it waits, it does not encode
    main = tokenised_examples(sp_tokenizer, rows, 48, LANGUAGES, tmp_path)
    waiter.join(30)
    assert got and got[0].path == main.path and got[0][0] == main[0]
