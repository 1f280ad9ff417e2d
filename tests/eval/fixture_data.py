"""Hand-written documents (not copied from the data sets) in each benchmark's Hugging Face hub field layout, laid
out as the specs' `mirror` patterns expect, so tests can point the data mirror or `eval.data_files` at them."""

from __future__ import annotations

import json
from pathlib import Path

# relative path under the fixture root -> its records, in file order
FIXTURE_DATA: dict[str, list[dict]] = {
    "belebele/deu_Latn.jsonl": [
        {"link": "x",
         "question_number": 1,
         "flores_passage": "Mvua kubwa ilinyesha jana usiku. Barabara nyingi zilifungwa asubuhi.",
         "question": "Kwa nini barabara zilifungwa? ",
         "mc_answer1": "Kwa sababu ya jua",
         "mc_answer2": "Kwa sababu ya mvua kubwa",
         "mc_answer3": "Kwa sababu ya sherehe",
         "mc_answer4": "Kwa sababu ya upepo",
         "correct_answer_num": "2",
         "dialect": "swh_Latn",
         "ds": "2023-05-03"},
        {"link": "y",
         "question_number": 2,
         "flores_passage": "Shule ilifunguliwa mwezi Januari. Wanafunzi mia tatu walijiandikisha.",
         "question": "Wanafunzi wangapi walijiandikisha?",
         "mc_answer1": "Mia moja",
         "mc_answer2": "Mia mbili",
         "mc_answer3": "Mia tatu",
         "mc_answer4": "Mia nne",
         "correct_answer_num": "3",
         "dialect": "swh_Latn",
         "ds": "2023-05-03"},
    ],
    "belebele/swh_Latn.jsonl": [
        {"link": "x",
         "question_number": 1,
         "flores_passage": "Mvua kubwa ilinyesha jana usiku. Barabara nyingi zilifungwa asubuhi.",
         "question": "Kwa nini barabara zilifungwa? ",
         "mc_answer1": "Kwa sababu ya jua",
         "mc_answer2": "Kwa sababu ya mvua kubwa",
         "mc_answer3": "Kwa sababu ya sherehe",
         "mc_answer4": "Kwa sababu ya upepo",
         "correct_answer_num": "2",
         "dialect": "swh_Latn",
         "ds": "2023-05-03"},
        {"link": "y",
         "question_number": 2,
         "flores_passage": "Shule ilifunguliwa mwezi Januari. Wanafunzi mia tatu walijiandikisha.",
         "question": "Wanafunzi wangapi walijiandikisha?",
         "mc_answer1": "Mia moja",
         "mc_answer2": "Mia mbili",
         "mc_answer3": "Mia tatu",
         "mc_answer4": "Mia nne",
         "correct_answer_num": "3",
         "dialect": "swh_Latn",
         "ds": "2023-05-03"},
    ],
    "belebele/zho_Hans.jsonl": [
        {"link": "x",
         "question_number": 1,
         "flores_passage": "Mvua kubwa ilinyesha jana usiku. Barabara nyingi zilifungwa asubuhi.",
         "question": "Kwa nini barabara zilifungwa? ",
         "mc_answer1": "Kwa sababu ya jua",
         "mc_answer2": "Kwa sababu ya mvua kubwa",
         "mc_answer3": "Kwa sababu ya sherehe",
         "mc_answer4": "Kwa sababu ya upepo",
         "correct_answer_num": "2",
         "dialect": "swh_Latn",
         "ds": "2023-05-03"},
        {"link": "y",
         "question_number": 2,
         "flores_passage": "Shule ilifunguliwa mwezi Januari. Wanafunzi mia tatu walijiandikisha.",
         "question": "Wanafunzi wangapi walijiandikisha?",
         "mc_answer1": "Mia moja",
         "mc_answer2": "Mia mbili",
         "mc_answer3": "Mia tatu",
         "mc_answer4": "Mia nne",
         "correct_answer_num": "3",
         "dialect": "swh_Latn",
         "ds": "2023-05-03"},
    ],
    "paws-x/de.test.jsonl": [
        {"id": 1,
         "sentence1": "Er wurde 1950 in Berlin geboren , und studierte in Wien .",
         "sentence2": "Er studierte in Wien , nachdem er 1950 in Berlin geboren wurde .",
         "label": 1},
        {"id": 2,
         "sentence1": "Die Brücke verbindet ( seit 1990 ) die beiden Ufer .",
         "sentence2": "Die beiden Ufer verbinden seit 1990 die Brücke .",
         "label": 0},
        {"id": 3, "sentence1": "", "sentence2": "Ein leeres Paar wird verworfen .", "label": 0},
    ],
    "paws-x/zh.test.jsonl": [
        {"id": 1, "sentence1": "他于1950年出生在柏林。", "sentence2": "他1950年生于柏林。", "label": 1},
        {"id": 2, "sentence1": "这座桥连接两岸。", "sentence2": "两岸连接这座桥。", "label": 0},
    ],
    "xnli/de.validation.jsonl": [
        {"premise": "Der Hund schläft im Garten", "hypothesis": "ein Tier ruht sich draußen aus.", "label": 0},
        {"premise": "Die Kinder spielen Fußball", "hypothesis": "sie gewinnen das Spiel.", "label": 1},
        {"premise": "Es regnet seit dem Morgen", "hypothesis": "die Sonne scheint den ganzen Tag.", "label": 2},
        {"premise": "Maria liest ein Buch", "hypothesis": "sie kann lesen.", "label": 0},
    ],
    "xnli/sw.validation.jsonl": [
        {"premise": "Mbwa analala bustanini", "hypothesis": "mnyama anapumzika nje.", "label": 0},
        {"premise": "Watoto wanacheza mpira", "hypothesis": "wanashinda mchezo.", "label": 1},
        {"premise": "Mvua inanyesha tangu asubuhi", "hypothesis": "jua linawaka siku nzima.", "label": 2},
    ],
    "xnli/zh.validation.jsonl": [
        {"premise": "他每天早上跑步", "hypothesis": "他经常锻炼。", "label": 0},
        {"premise": "商店今天关门了", "hypothesis": "老板生病了。", "label": 1},
        {"premise": "猫在沙发上睡觉", "hypothesis": "沙发上没有动物。", "label": 2},
    ],
    "xstorycloze/sw.eval.jsonl": [
        {"story_id": "s1",
         "input_sentence_1": "Amina aliamka mapema.",
         "input_sentence_2": "Alitaka kwenda sokoni.",
         "input_sentence_3": "Alichukua kikapu chake.",
         "input_sentence_4": "Alitembea hadi sokoni.",
         "sentence_quiz1": "Alinunua matunda mengi.",
         "sentence_quiz2": "Alilala tena kitandani.",
         "answer_right_ending": 1},
        {"story_id": "s2",
         "input_sentence_1": "Juma alikuwa na njaa.",
         "input_sentence_2": "Hakukuwa na chakula nyumbani.",
         "input_sentence_3": "Alikwenda mgahawani.",
         "input_sentence_4": "Aliagiza wali na maharagwe.",
         "sentence_quiz1": "Aliogelea baharini.",
         "sentence_quiz2": "Alikula hadi akashiba.",
         "answer_right_ending": 2},
    ],
    "xwinograd/zh.test.jsonl": [
        {"sentence": "奖杯放不进箱子，因为_太大了。", "option1": "奖杯", "option2": "箱子", "answer": "1"},
        {"sentence": "奖杯放不进箱子，因为_太小了。", "option1": "奖杯", "option2": "箱子", "answer": "2"},
        {"sentence": "The city council refused the demonstrators a permit because _ feared violence.",
         "option1": "the city council",
         "option2": "the demonstrators",
         "answer": "1"},
    ],
}


def write_fixtures(root: Path) -> Path:
    """Write every fixture file under ``root`` as UTF-8 JSONL, one record a line; returns ``root``."""
    root = Path(root)
    for rel, records in FIXTURE_DATA.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return root
