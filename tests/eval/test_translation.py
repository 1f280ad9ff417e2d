"""FLORES scoring: corpus BLEU / chrF++, per-segment chrF++, off-target rate with real fastText."""

from __future__ import annotations

import pytest

from alignx.config import LangIdConfig
from alignx.data.instructions import PROMPT_TEMPLATE, translation_instruction
from alignx.data.langid import LanguageIdentifier
from alignx.eval.translation import score_translations, translation_prompts


@pytest.fixture(scope="module")
def top_label(tmp_path_factory):
    identifier = LanguageIdentifier(LangIdConfig(cache_dir=str(tmp_path_factory.mktemp("ft"))))
    return lambda text: identifier.predict(text, 1)[0][0]


def _lines(mirror, code, n=20):
    return (mirror / "flores200" / f"{code}.devtest-head500").read_text(encoding="utf-8").splitlines()[:n]


def test_perfect_translations_score_100_and_on_target(mirror, top_label):
    refs = _lines(mirror, "deu_Latn")
    result = score_translations(refs, refs, "de", top_label)
    assert result.metrics["bleu"] == pytest.approx(100.0)
    assert result.metrics["chrf"] == pytest.approx(100.0)
    assert all(r["chrf_seg"] == pytest.approx(100.0) for r in result.items)
    assert result.metrics["off_target"] == 0.0


def test_off_target_counts_outputs_in_the_wrong_language(mirror, top_label):
    refs, english = _lines(mirror, "deu_Latn"), _lines(mirror, "eng_Latn")
    hyps = english[:10] + refs[10:] # half English, half German
    result = score_translations(hyps, refs, "de", top_label)
    assert result.metrics["off_target"] == pytest.approx(0.5)
    assert [r["off_target"] for r in result.items] == [1] * 10 + [0] * 10
    assert result.metrics["chrf"] < 100.0
    zh = _lines(mirror, "zho_Hans")
    assert score_translations(zh, zh, "zh", top_label).metrics["off_target"] == 0.0
    assert score_translations([""] * 2, zh[:2], "zh", top_label).metrics["off_target"] == 1.0  # empty output is off target


def test_no_off_target_rate_without_lid(mirror):
    sw = _lines(mirror, "swh_Latn", 5)
    result = score_translations(sw, sw, "sw", None)
    assert result.metrics["off_target"] is None and "off_target" not in result.items[0]


def test_prompt_is_the_stage1_template(tiny_tokenizer):
    ids = translation_prompts(tiny_tokenizer, "en", "de", ["Hello world."], 512)[0]
    text = tiny_tokenizer.decode(ids, skip_special_tokens=True)
    expected = PROMPT_TEMPLATE.format(instruction=translation_instruction("en", "de"), input="Hello world.")
    assert text == expected and ids[0] == tiny_tokenizer.bos_token_id
