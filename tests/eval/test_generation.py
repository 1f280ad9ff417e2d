"""Greedy generation in left-padded batches, stop strings, and MGSM's final-number match."""

from __future__ import annotations

import pytest
import torch

from alignx.eval.generation import GreedyGenerator, cut_at_stops, exact_match_number, final_number


@pytest.mark.parametrize("output,expected", [
    ("The answer is 2,125.", "2125"),
    ("He pays $276,000 in total", "276000"),
    ("first 3 then 18", "18"),
    ("18.0", "18"),
    ("half is 2.5", "2.5"),
    ("1.234.567 Einwohner", "1234567"),
    ("2\u202f125", "2125"),
    ("-7 degrees", "-7"),
    ("no number here", None),
])
def test_final_number(output, expected):
    assert final_number(output) == expected


def test_exact_match_strips_thousands_separators_on_both_sides():
    assert exact_match_number("so he made 114200 dollars", "114,200") == 1
    assert exact_match_number("114,200", "114200") == 1
    assert exact_match_number("Answer: 5,600 calories", "5,600") == 1
    assert exact_match_number("5,601", "5,600") == 0
    assert exact_match_number("nothing", "3") == 0


def test_cut_at_stops():
    assert cut_at_stops(" 18\n\nSwali: next", ["Swali:", "\n\n"]) == " 18"
    assert cut_at_stops("abc", ["", "x"]) == "abc"


def _greedy_one(model, ids, n):
    ids = list(ids)
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            if nxt == 2:  # EOS of the tiny tokenizer
                break
            ids.append(nxt)
            out.append(nxt)
    return out


def test_batched_generation_equals_one_prompt_at_a_time(tiny_model, tiny_tokenizer):
    prompts = ["Der Hund", "Mwanaume alifungua bomba la maji kwa hiyo", "那人打开水龙头", "Question: 1 + 1 =\nAnswer:"]
    gen = GreedyGenerator(tiny_model, tiny_tokenizer, batch_size=3, max_new_tokens=6)
    got = gen.generate(gen.encode(prompts), until=[])
    for prompt, text in zip(prompts, got):
        ids = _greedy_one(tiny_model, tiny_tokenizer.encode(prompt), 6)
        assert text == tiny_tokenizer.decode(ids, skip_special_tokens=True)


def test_generation_is_cut_at_stop_strings(tiny_model, tiny_tokenizer):
    gen = GreedyGenerator(tiny_model, tiny_tokenizer, batch_size=2, max_new_tokens=8)
    full = gen.generate(gen.encode(["Der Hund"]), until=[])[0]
    assert len(full) > 2
    stop = full[1:3]
    assert gen.generate(gen.encode(["Der Hund"]), until=[stop])[0] == full.split(stop, 1)[0]
