"""Instruction formatting, span extraction for SentencePiece and byte-level BPE, collation, translation rows."""

from __future__ import annotations

import pandas as pd
import pytest

from alignx.data.collate import collate, epoch_batches, micro_batch_schedule
from alignx.data.instructions import (
    PROMPT_TEMPLATE, TrainExample, cap_pairs_per_language, encode_example, encode_examples, encode_rows,
    translation_instruction, translation_rows,
)
from tests.train.tatoeba_shards import tatoeba_pairs
from tests.train.tiny import byte_level_tokenizer

TEXTS = [("de", "Ich bin müde, aber glücklich."), ("ru", "Это мой дом."), ("zh", "我今天很忙。"),
         ("fr", "Il pleut depuis hier."), ("de", "„Wo ist der Bahnhof?“")]


def test_translation_instruction_names_languages():
    assert translation_instruction("de", "en") == "Translate the following sentence from German to English."
    with pytest.raises(ValueError, match="unknown language code 'xx'"):
        translation_instruction("xx", "en")


@pytest.fixture(scope="module")
def qwen_style_tokenizer(mirror):
    return byte_level_tokenizer(mirror, qwen_style=True)


@pytest.fixture(params=["sentencepiece", "bytelevel", "qwen-style"])
def tokenizer(request, sp_tokenizer, bpe_tokenizer, qwen_style_tokenizer):
    if request.param == "sentencepiece":
        return sp_tokenizer
    if request.param == "bytelevel":
        return bpe_tokenizer
    return qwen_style_tokenizer  # tokens may cross the span boundaries


def _decode(tokenizer, ids):
    return tokenizer.decode(ids, skip_special_tokens=False)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_spans_decode_to_the_sentences_in_padded_batches(tokenizer, mirror, padding_side):
    pairs = [(lang, x, e) for lang in ("de", "ru", "zh") for x, e in tatoeba_pairs(mirror, lang, 8, skip=500)]
    rows = [(translation_instruction(lang, "en"), x, e) for lang, x, e in pairs]
    encoded = encode_examples(tokenizer, rows, 512)
    batch = collate([TrainExample(e) for e in encoded], tokenizer.pad_token_id, padding_side)
    assert bool(batch["span_ok"].all())
    for row, (_, x, e) in enumerate(pairs):
        s, t = batch["src_span"][row].tolist(), batch["tgt_span"][row].tolist()
        assert _decode(tokenizer, batch["input_ids"][row, s[0] : s[1]]).strip() == x
        assert _decode(tokenizer, batch["input_ids"][row, t[0] : t[1]]).strip() == e
        after = batch["input_ids"][row, t[1]]
        assert int(after) == tokenizer.eos_token_id  # the target span stops before the final EOS
    pad_rows = batch["attention_mask"].sum(1) < batch["input_ids"].shape[1]
    assert bool(pad_rows.any())  # the padding really shifted some spans


def test_boundary_crossing_token_stays_in_context_and_in_the_span(qwen_style_tokenizer):
    tok = qwen_style_tokenizer
    whole = tok(PROMPT_TEMPLATE.format(instruction="T.", input="Ich bin da.") + "I am here.")["input_ids"]
    assert any(tok.decode([t]).startswith(".\n") for t in whole)  # "." + newlines is one token in context
    enc = encode_example(tok, "T.", "Ich bin da.", "I am here.", 512)
    assert enc.input_ids[:-1] == whole  # the in-context tokenisation, never a segment-wise one
    assert _decode(tok, enc.input_ids[slice(*enc.src_span)]) == "Ich bin da.\n\n"  # the straddling token is in


def test_whole_text_matches_the_template(tokenizer):
    enc = encode_example(tokenizer, "Translate.", "Ich bin da.", "I am here.", 512)
    text = _decode(tokenizer, enc.input_ids[: enc.prompt_len])
    expected = PROMPT_TEMPLATE.format(instruction="Translate.", input="Ich bin da.")
    assert text.replace(tokenizer.bos_token or "", "").replace(" ", "") == expected.replace(" ", "")
    assert enc.input_ids[-1] == tokenizer.eos_token_id


def test_bos_follows_the_tokenizer_default(sp_tokenizer, bpe_tokenizer):
    assert encode_example(sp_tokenizer, "T.", "a", "b", 64).input_ids[0] == sp_tokenizer.bos_token_id
    assert encode_example(bpe_tokenizer, "T.", "a", "b", 64).input_ids[0] != bpe_tokenizer.eos_token_id
    assert encode_example(bpe_tokenizer, "T.", "a", "b", 64).input_ids[:1] == bpe_tokenizer("Below")["input_ids"][:1]


def test_truncation_drops_cut_spans_and_never_crashes(sp_tokenizer):
    full = encode_example(sp_tokenizer, "Translate.", "Ich bin müde.", "I am tired.", 512)
    in_target = encode_example(sp_tokenizer, "Translate.", "Ich bin müde.", "I am tired.", full.tgt_span[1] - 1)
    assert in_target.src_span == full.src_span and in_target.tgt_span is None
    no_eos = encode_example(sp_tokenizer, "Translate.", "Ich bin müde.", "I am tired.", full.tgt_span[1])
    assert no_eos.tgt_span == full.tgt_span  # only the EOS was cut
    in_source = encode_example(sp_tokenizer, "Translate.", "Ich bin müde.", "I am tired.", full.src_span[0] + 1)
    assert in_source.src_span is None and in_source.tgt_span is None
    for length in (1, 2, 5):
        assert len(encode_example(sp_tokenizer, "Translate.", "x", "y", length).input_ids) == length


def test_prompt_only_and_no_input(sp_tokenizer):
    prompt = encode_example(sp_tokenizer, "Translate.", "Ich bin müde.", None, 512)
    assert prompt.tgt_span is None and prompt.prompt_len == len(prompt.input_ids)
    assert prompt.input_ids[-1] != sp_tokenizer.eos_token_id
    general = encode_example(sp_tokenizer, "Name a colour.", "", "Blue.", 512)
    assert general.src_span is None and _decode(sp_tokenizer, general.input_ids[slice(*general.tgt_span)]) == "Blue."
    assert "### Input:" not in _decode(sp_tokenizer, general.input_ids)


def test_collate_masks_padding_and_prompt(sp_tokenizer):
    enc = encode_examples(sp_tokenizer, [("T.", "kurz", "short"), ("T.", "ein viel längerer Satz hier", "a much longer one")], 128)
    ex = [TrainExample(e, 1, 0) for e in enc]
    left = collate(ex, sp_tokenizer.pad_token_id, "left", mask_prompt=True)
    right = collate(ex, sp_tokenizer.pad_token_id, "right", mask_prompt=False)
    shift = left["input_ids"].shape[1] - len(enc[0].input_ids)
    assert shift > 0
    assert left["src_span"][0].tolist() == [enc[0].src_span[0] + shift, enc[0].src_span[1] + shift]
    assert right["src_span"][0].tolist() == list(enc[0].src_span)
    assert (left["labels"][0, : shift + enc[0].prompt_len] == -100).all()
    assert left["labels"][0, shift + enc[0].prompt_len] == enc[0].input_ids[enc[0].prompt_len]
    assert (right["labels"][0, len(enc[0].input_ids) :] == -100).all()
    assert right["labels"][0, 0] == enc[0].input_ids[0]


def test_batch_schedule_is_deterministic_and_groups_by_length():
    lengths = [(i * 37) % 101 + 5 for i in range(400)]
    grouped = epoch_batches(lengths, 8, seed=3, epoch=0, group_by_length=True)
    plain = epoch_batches(lengths, 8, seed=3, epoch=0, group_by_length=False)
    assert sorted(i for b in grouped for i in b) == list(range(400))
    assert grouped == epoch_batches(lengths, 8, seed=3, epoch=0, group_by_length=True)
    assert grouped != epoch_batches(lengths, 8, seed=3, epoch=1, group_by_length=True)

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    assert padding(grouped) < 0.2 * padding(plain)
    assert max(lengths[i] for i in grouped[0]) == max(lengths)  # an out-of-memory error shows on step one
    assert len(micro_batch_schedule(lengths, 8, 130, 3, True)) == 130  # spans epochs


@pytest.mark.parametrize("group_by_length", [True, False])
def test_examples_sharing_a_text_never_share_a_micro_batch(sp_tokenizer, mirror, group_by_length):
    pairs = pd.DataFrame([{"src_lang": "ru", "tgt_lang": "en", "src_text": x, "tgt_text": e, "source": "t"}
                          for x, e in tatoeba_pairs(mirror, "ru", 300, skip=1000)])
    examples = encode_rows(sp_tokenizer, translation_rows(pairs), 256, ["en", "ru"])
    groups = [ex.group for ex in examples]
    assert len(set(groups)) < len(pairs)  # Tatoeba repeats sentences: some groups join several pairs
    lengths = [len(ex.encoded.input_ids) for ex in examples]
    batches = micro_batch_schedule(lengths, 16, 80, 0, group_by_length, groups)
    assert all(len({groups[i] for i in b}) == len(b) for b in batches)
    first_epoch = epoch_batches(lengths, 16, 0, 0, group_by_length, groups)
    assert sorted(i for b in first_epoch for i in b) == list(range(len(examples)))


def _pairs():
    return pd.DataFrame([
        {"src_lang": "de", "tgt_lang": "en", "src_text": "Hallo.", "tgt_text": "Hello.", "source": "t"},
        {"src_lang": "en", "tgt_lang": "fr", "src_text": "Hello!", "tgt_text": "Bonjour.", "source": "t"},
        {"src_lang": "ru", "tgt_lang": "en", "src_text": "Кот.", "tgt_text": "A cat.", "source": "t"},
        {"src_lang": "de", "tgt_lang": "en", "src_text": "Eine Katze.", "tgt_text": "A cat.", "source": "t"},
    ])


def test_translation_rows_both_directions_and_multiway():
    rows = translation_rows(_pairs())
    assert len(rows) == 8
    assert {(r.src_lang, r.tgt_lang, r.input, r.output) for r in rows.itertuples()} >= {
        ("de", "en", "Hallo.", "Hello."), ("en", "de", "Hello.", "Hallo."), ("fr", "en", "Bonjour.", "Hello!")}
    multi = translation_rows(_pairs(), non_english_pairs=True)
    extra = multi.iloc[8:]
    # "A cat." is shared by ru and de; "Hello." and "Hello!" normalise differently, so no de-fr pair.
    assert sorted(zip(extra.src_lang, extra.tgt_lang, extra.input)) == [("de", "ru", "Eine Katze."), ("ru", "de", "Кот.")]
    assert (multi["kind"] == "translation").all() and multi["example_id"].is_unique


def test_cap_pairs_per_language_counts_the_non_pivot_side():
    capped = cap_pairs_per_language(_pairs(), 1, "en", seed=0)
    assert sorted(capped.src_lang.where(capped.src_lang != "en", capped.tgt_lang)) == ["de", "fr", "ru"]
