"""Language ID on real Tatoeba slices: retention on clean pairs, rejection of swapped-in foreign sentences."""

from __future__ import annotations

import math
import os
import random

import pytest

from alignx.config import LangIdConfig, LangPolicy
from alignx.data.filters import LanguageFilter, LidScoreFilter, ParallelPair, run_filters
from alignx.profiles import parse_config
from alignx.data.langid import (
    BUNDLED_MODEL,
    LOW_LID_SCORE,
    WRONG_LANGUAGE,
    LanguageIdentifier,
    ScriptCheck,
    prepare_model,
)
from tests.data.conftest import LID_LANGS


@pytest.fixture(scope="module")
def identifier() -> LanguageIdentifier:
    return LanguageIdentifier(LangIdConfig())


def lid_filter_alone(identifier, pairs: list[ParallelPair]) -> tuple[list[ParallelPair], LanguageFilter]:
    language = LanguageFilter(identifier)
    return run_filters([language, LidScoreFilter(identifier)], pairs), language


def as_pairs(lang: str, rows: list[tuple[str, str]]) -> list[ParallelPair]:
    return [ParallelPair("en", lang, a, b, "tatoeba") for a, b in rows]


def test_bundled_model_is_copied_to_the_cache_and_ftlang_cache_points_there(tmp_path, monkeypatch):
    monkeypatch.delenv("FTLANG_CACHE", raising=False)
    path = prepare_model(LangIdConfig(cache_dir=str(tmp_path / "ft")))
    assert path == tmp_path / "ft" / BUNDLED_MODEL and path.stat().st_size > 100_000
    assert os.environ["FTLANG_CACHE"] == str(tmp_path / "ft")
    lid = LanguageIdentifier(LangIdConfig(cache_dir=str(tmp_path / "ft")))
    assert lid.predict("Where is the railway station?", k=2)[0][0] == "en"
    assert lid.predict("Wo ist der\nBahnhof?")[0][0] == "de"  # a newline inside the text is no error
    with pytest.raises(FileNotFoundError, match="lid.176.bin"):
        prepare_model(LangIdConfig(cache_dir=str(tmp_path / "ft"), model_path=str(tmp_path / "lid.176.bin")))


@pytest.mark.parametrize("lang", LID_LANGS)
def test_clean_tatoeba_pairs_are_kept(identifier, tatoeba_slices, lang):
    pairs = as_pairs(lang, tatoeba_slices[lang])
    kept, _ = lid_filter_alone(identifier, pairs)
    floor = 0.95 if lang == "zh" else 0.97
    assert len(kept) / len(pairs) >= floor, f"{lang}: kept {len(kept)}/{len(pairs)}"
    assert all(0.0 < p.tgt_lid <= 1.0 and 0.0 < p.src_lid <= 1.0 for p in kept)


@pytest.mark.parametrize("lang", LID_LANGS)
def test_swapped_foreign_sentences_are_rejected_as_wrong_language(identifier, tatoeba_slices, lang):
    rng = random.Random(lang)
    others = [x for x in LID_LANGS + ["sw", "en"] if x != lang]
    pairs = as_pairs(lang, tatoeba_slices[lang])
    swapped = set(rng.sample(range(len(pairs)), len(pairs) // 5))
    for i in swapped:  # the X side becomes a sentence of another language (English included)
        other = rng.choice(others)
        donor = tatoeba_slices["de" if other == "en" else other]
        pairs[i].tgt_text = rng.choice(donor)[0 if other == "en" else 1]
    language = LanguageFilter(identifier)
    kept = {id(p) for p in language.apply(pairs)}
    rejected = {i for i, p in enumerate(pairs) if id(p) not in kept}
    assert len(swapped & rejected) / len(swapped) >= 0.95, f"{lang}: {len(swapped & rejected)}/{len(swapped)}"
    assert language.stats.dropped[WRONG_LANGUAGE] == len(rejected)


def test_swahili_lid_is_off_and_keeps_every_pair(identifier, tatoeba_slices):
    pairs = as_pairs("sw", tatoeba_slices["sw"])
    pairs[0].tgt_text = "Das ist ein deutscher Satz."  # not even this is judged
    kept, language = lid_filter_alone(identifier, pairs)
    assert sum(1 for p in kept if math.isnan(p.tgt_lid)) == len(kept)
    assert pairs[0] in kept and "sw" not in language.languages


def test_script_checks():
    hani, jpan, thai = ScriptCheck("Hani"), ScriptCheck("Jpan"), ScriptCheck("Thai")
    assert hani("汤姆和他的朋友们在公园喝醉了") and hani("我想要见见Terry Tate先生。")
    assert not hani("それは私の本です。") and not hani("Hello there")
    assert jpan("それは私の本です。") and not jpan("本日定休日。") and not jpan("汤姆不会同意的")
    assert thai("Scherzer ต้องการปะทะกับ Rockies") and not thai("Где вокзал?")


def test_low_score_floor_rejects_with_its_own_reason(identifier):
    lid = LanguageIdentifier(LangIdConfig(policies={"en": LangPolicy(min_score=0.999)}))
    scores, reasons, tops = lid.judge(["Yes.", "The cat is sleeping on the warm windowsill."], "en")
    assert reasons[0] == LOW_LID_SCORE and scores[0] < 0.999 and tops[0] == "en"
    pairs = [ParallelPair("en", "de", "Yes.", "Ich habe heute leider keine Zeit für dich.", "t"),
             ParallelPair("en", "de", "Good morning to you all.", "Bonjour tout le monde, ça va bien ?", "t")]
    language, low = LanguageFilter(lid), LidScoreFilter(lid)
    assert run_filters([language, low], pairs) == []
    assert language.stats.dropped == {WRONG_LANGUAGE: 1} and low.stats.dropped == {LOW_LID_SCORE: 1}
    assert LidScoreFilter.from_context(type("Ctx", (), {"cfg": parse_config({"name": "t"}).data})) is None


def test_policy_config_merges_over_recommended_defaults():
    cfg = parse_config({"name": "t", "data": {"langid": {"policies": {"zh": {"top_k": 1}}}}}).data.langid
    assert cfg.policy("zh").top_k == 1 and cfg.policy("zh").script is None
    assert cfg.policy("sw").enabled is False and cfg.policy("ja").script == "Jpan"
    assert cfg.policy("de") == cfg.default
