"""The benchmark registry: prompts as lm-eval 0.4 builds them, data reading and its error paths."""

from __future__ import annotations

import json

import pytest

from alignx.eval.benchmarks import (
    BenchmarkSpecError,
    UnknownBenchmarkError,
    choice_item,
    generation_item,
    get_benchmark,
    known_benchmarks,
    load_spec,
    validate_benchmarks,
)
from alignx.eval.sources import BenchmarkDataError, read_documents
from alignx.mirror import DataUnavailableError


def test_registry_ships_every_benchmark():
    assert set(known_benchmarks()) >= {"xcopa", "xnli", "xstorycloze", "xwinograd", "pawsx", "belebele", "mgsm", "flores"}
    assert get_benchmark("xcopa").languages == ["et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh"]


def test_an_evaluation_can_name_any_language_its_benchmark_has():
    """Every language a benchmark lists is a registry language, so eval.languages accepts it (also one
    the pipeline does not train), and the plan picks it for that benchmark and no other."""
    from alignx.eval.evaluation_plan import eval_languages
    from alignx.languages import get_language
    from alignx.profiles import load_profile

    for name in known_benchmarks():
        for lang in get_benchmark(name).languages:
            get_language(lang)
    cfg = load_profile("smoke", {"eval.languages": ["ko", "pt", "hi", "et"]})
    assert eval_languages(get_benchmark("pawsx"), cfg) == ["ko"]
    assert eval_languages(get_benchmark("xwinograd"), cfg) == ["pt"]
    assert eval_languages(get_benchmark("xstorycloze"), cfg) == ["hi"]
    assert eval_languages(get_benchmark("xcopa"), cfg) == ["et"]
    assert eval_languages(get_benchmark("flores"), cfg) == ["ko", "pt", "hi", "et"]


def test_unknown_benchmark_lists_known_ones():
    with pytest.raises(UnknownBenchmarkError) as err:
        validate_benchmarks(["xcopa", "xcopaa", "hellaswag"])
    msg = str(err.value)
    assert "'xcopaa'" in msg and "'hellaswag'" in msg
    for name in known_benchmarks():
        assert name in msg


def test_xcopa_prompts_match_lm_eval_sw_and_zh(mirror):
    spec = get_benchmark("xcopa")
    sw = read_documents(spec, "sw", mirror)
    item = choice_item(spec, "sw", sw[0])  # effect
    assert item.requests == [
        ("Mwanaume alifungua bomba la maji kwa hiyo", " choo kilijaa maji."),
        ("Mwanaume alifungua bomba la maji kwa hiyo", " maji yalitiririka kutoka kwenye bomba."),
    ]
    assert item.gold == 1
    cause = next(d for d in sw if d["question"] == "cause")
    assert choice_item(spec, "sw", cause).requests[0] == (
        "Nyama ya baga iligeuka kuwa rangi ya udongo kwa sababu", " mpishi aliiweka kweny friji.")
    zh = choice_item(spec, "zh", read_documents(spec, "zh", mirror)[0])
    assert zh.requests == [("那人打开水龙头 所以", " 厕所里满是水。"), ("那人打开水龙头 所以", " 水从水龙头喷口流出。")]
    # acc_norm divides by the choice as doc_to_choice gives it: without the target delimiter
    assert zh.choice_strings == ["厕所里满是水。", "水从水龙头喷口流出。"]


def test_xcopa_drops_last_character_even_without_period(mirror):
    spec = get_benchmark("xcopa")
    th = choice_item(spec, "th", read_documents(spec, "th", mirror)[0])
    # premise "ผู้ชายเปิดก๊อกนํ้า" has no period: its last code point (the vowel "า") goes, as in lm-eval
    assert th.requests[0][0] == "ผู้ชายเปิดก๊อกนํ้ ดังนั้น"


def test_every_xcopa_language_renders(mirror):
    spec = get_benchmark("xcopa")
    for lang in spec.languages:
        docs = read_documents(spec, lang, mirror, limit=2)
        assert len(docs) == 2
        assert all(choice_item(spec, lang, d).requests[0][0] for d in docs)


def test_xnli_empty_context_and_whole_sentence_choices(eval_fixtures):
    spec = get_benchmark("xnli")
    doc = read_documents(spec, "de", eval_fixtures)[0]
    item = choice_item(spec, "de", doc)
    assert item.requests == [
        ("", " Der Hund schläft im Garten, richtig? Ja, ein Tier ruht sich draußen aus."),
        ("", " Der Hund schläft im Garten, richtig? Auch, ein Tier ruht sich draußen aus."),
        ("", " Der Hund schläft im Garten, richtig? Nein, ein Tier ruht sich draußen aus."),
    ]
    assert item.gold == 0
    zh = choice_item(spec, "zh", read_documents(spec, "zh", eval_fixtures)[2])
    assert zh.requests[2] == ("", " 猫在沙发上睡觉, 正确? 不是的, 沙发上没有动物。") and zh.gold == 2


def test_xstorycloze_joins_the_story(eval_fixtures):
    spec = get_benchmark("xstorycloze")
    item = choice_item(spec, "sw", read_documents(spec, "sw", eval_fixtures)[1])
    assert item.requests[1] == (
        "Juma alikuwa na njaa. Hakukuwa na chakula nyumbani. Alikwenda mgahawani. Aliagiza wali na maharagwe.",
        " Alikula hadi akashiba.",
    )
    assert item.gold == 1


def test_xwinograd_multiple_input_mode(eval_fixtures):
    spec = get_benchmark("xwinograd")
    assert spec.code_for("ja") == "jp"
    docs = read_documents(spec, "zh", eval_fixtures)
    item = choice_item(spec, "zh", docs[1])
    assert item.requests == [("奖杯放不进箱子，因为奖杯", " 太小了。"), ("奖杯放不进箱子，因为箱子", " 太小了。")]
    assert item.gold == 1
    assert item.choice_strings == ["奖杯放不进箱子，因为奖杯", "奖杯放不进箱子，因为箱子"]  # lm-eval's acc_norm lengths
    en = choice_item(spec, "zh", docs[2])
    assert en.requests[0] == ("The city council refused the demonstrators a permit because the city council", " feared violence.")


def test_pawsx_detokenises_only_where_lm_eval_does(eval_fixtures):
    spec = get_benchmark("pawsx")
    de = read_documents(spec, "de", eval_fixtures)
    assert len(de) == 2  # the pair with an empty sentence is dropped
    item = choice_item(spec, "de", de[0])
    assert item.requests == [
        ("", "Er wurde 1950 in Berlin geboren, und studierte in Wien, richtig? Nein, er studierte in Wien, nachdem er 1950 in Berlin geboren wurde."),
        ("", "Er wurde 1950 in Berlin geboren, und studierte in Wien, richtig? Ja, er studierte in Wien, nachdem er 1950 in Berlin geboren wurde."),
    ]
    assert choice_item(spec, "de", de[1]).requests[0][1].startswith("Die Brücke verbindet (seit 1990) die beiden Ufer,")
    zh = choice_item(spec, "zh", read_documents(spec, "zh", eval_fixtures)[0])
    assert zh.requests[1] == ("", "他于1950年出生在柏林。, 对吧? 是, 他1950年生于柏林。")  # zh keeps its final "。"


def test_belebele_letters_after_the_passage(eval_fixtures):
    spec = get_benchmark("belebele")
    assert spec.code_for("sw") == "swh_Latn"
    item = choice_item(spec, "sw", read_documents(spec, "sw", eval_fixtures)[0])
    assert item.requests[0][0] == (
        "P: Mvua kubwa ilinyesha jana usiku. Barabara nyingi zilifungwa asubuhi.\n"
        "Q: Kwa nini barabara zilifungwa?\nA: Kwa sababu ya jua\nB: Kwa sababu ya mvua kubwa\n"
        "C: Kwa sababu ya sherehe\nD: Kwa sababu ya upepo\nAnswer:"
    )
    assert [c for _, c in item.requests] == [" A", " B", " C", " D"] and item.gold == 1


def test_mgsm_prompt_and_thousands_separator_gold(mirror):
    spec = get_benchmark("mgsm")
    docs = read_documents(spec, "sw", mirror)
    item = generation_item(spec, "sw", docs[0])
    assert item.prompt.startswith("Swali: Bata wa Janet") and item.prompt.endswith("\nAnswer:")
    assert item.target == "18" and "Swali:" in item.until
    de = generation_item(spec, "de", read_documents(spec, "de", mirror)[0])
    assert de.prompt.startswith("Frage: ") and de.prompt.endswith("\nAntwort:")
    shots = [{"question": "1+1?", "answer_number": "2"}]
    assert generation_item(spec, "en", docs[0], shots).prompt.startswith("Question: 1+1?\nAnswer: 2\n\nQuestion: ")
    en = read_documents(spec, "en", mirror)
    assert "2,125" in {d["answer_number"] for d in en}


def test_missing_file_names_it(tmp_path):
    spec = get_benchmark("xcopa")
    with pytest.raises(DataUnavailableError) as err:
        read_documents(spec, "sw", tmp_path)
    assert str(tmp_path / "xcopa" / "val.sw.jsonl") in str(err.value)


def test_malformed_files_name_file_line_and_expectation(tmp_path):
    spec = get_benchmark("xcopa")
    (tmp_path / "xcopa").mkdir()
    bad = tmp_path / "xcopa" / "val.sw.jsonl"
    good = json.dumps({"premise": "a.", "choice1": "B", "choice2": "C", "question": "cause", "label": 0})
    bad.write_text(good + "\n{not json\n", encoding="utf-8")
    with pytest.raises(BenchmarkDataError, match=r"val\.sw\.jsonl line 2: expected a JSON object"):
        read_documents(spec, "sw", tmp_path)
    bad.write_text(good + "\n" + json.dumps({"premise": "a.", "choice1": "B"}) + "\n", encoding="utf-8")
    with pytest.raises(BenchmarkDataError, match=r"line 2: expected fields .* missing \['choice2', 'question', 'label'\]"):
        read_documents(spec, "sw", tmp_path)
    mgsm = get_benchmark("mgsm")
    (tmp_path / "mgsm").mkdir()
    (tmp_path / "mgsm" / "mgsm_sw.tsv").write_text("q one\t1\nq two without answer\n", encoding="utf-8")
    with pytest.raises(BenchmarkDataError, match=r"mgsm_sw\.tsv line 2: expected 2 tab-separated columns .* found 1"):
        read_documents(mgsm, "sw", tmp_path)
    (tmp_path / "mgsm" / "mgsm_sw.tsv").write_text("", encoding="utf-8")
    with pytest.raises(BenchmarkDataError, match="no documents"):
        read_documents(mgsm, "sw", tmp_path)


def test_bad_spec_file_names_file_and_problem(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nkind: multiple_choice\nlanguages: [sw]\nsource: {mirror: x.jsonl}\nmetrics: [acc]\n")
    with pytest.raises(BenchmarkSpecError, match=r"broken\.yaml: .*context \+ choices"):
        load_spec(path)
