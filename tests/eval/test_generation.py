"""Greedy generation in left-padded batches, stop strings, and MGSM's final-number match; the compacting
decoder gives transformers' greedy ``generate`` tokens on tiny Llama 3, Qwen3 and Gemma 3 models."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, StoppingCriteriaList

from alignx.eval.generation import GreedyGenerator, _StopStrings, cut_at_stops, exact_match_number, final_number
from alignx.eval.greedy import GreedyDecoder, StopStrings, logits_options
from tests.train.real_arch import FAMILIES, real_tokenizer


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


# ---------------------------------------------------------------- the decoder against transformers' generate
@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_lm(request, mirror, tmp_path_factory):
    """(model, tokenizer) of a tiny Llama 3, Qwen3 or Gemma 3 with its real vocabulary; the wide init makes
    the logits peaked, so float rounding never decides a greedy choice."""
    family = FAMILIES[request.param]
    tokenizer = real_tokenizer(mirror, family.tokenizer, tmp_path_factory.mktemp(request.param))
    config = family.config_class(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=1024, tie_word_embeddings=family.tied,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, initializer_range=0.2, **family.extra,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval(), tokenizer


def _prompts(mirror, tokenizer, instruction: str = "") -> list[list[int]]:
    """Nine real sentences cut to 3 to 40 words after an instruction they share: prompt lengths from a few
    tokens to past Gemma's 16-token window."""
    lines = []
    for code, words in (("eng_Latn", (3, 40, 9)), ("deu_Latn", (25, 5, 14)), ("zho_Hans", (8, 30, 2))):
        text = (mirror / "flores200" / f"{code}.devtest-head500").read_text(encoding="utf-8").splitlines()
        for line, n in zip(text[3:], words):
            lines.append(" ".join(line.split()[:n]) if code != "zho_Hans" else line[:2 * n])
    return [tokenizer.encode(instruction + line) for line in lines]


def _hf_tokens(model, tokenizer, prompts, max_new_tokens, eos_id=None, stops=()):
    """transformers' greedy ``generate`` over all prompts in one left-padded batch: each row's tokens
    through the one that ended it, and whether the rest of the row is padding."""
    width = max(map(len, prompts))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                         pad_token_id=pad, eos_token_id=eos_id,
                         stopping_criteria=StoppingCriteriaList([_StopStrings(tokenizer, stops, width)]))
    return [row.tolist() for row in out[:, width:]]


def _clean_text(tokenizer, token: int) -> str | None:
    text = tokenizer.decode([token])
    return text if text.strip() and "\ufffd" not in text and token not in tokenizer.all_special_ids else None


def _first_seen(tokenizer, rows: list[list[int]], step: int, skip: int | None = None) -> tuple[int, str]:
    """A token (and its text) that some row emits for the first time at ``step`` or later, in a row without ``skip``."""
    for j in range(step, len(rows[0])):
        for row in rows:
            text = _clean_text(tokenizer, row[j])
            if text and skip not in row and text not in tokenizer.decode(row[:j]):
                return row[j], text
    raise AssertionError("no token appears late enough")


@pytest.mark.parametrize("instruction", ["", "Translate the following sentence into English, and nothing else.\n"])
def test_decoder_equals_generate_when_rows_end_at_different_steps(family_lm, mirror, instruction):
    model, tok = family_lm
    prompts = _prompts(mirror, tok, instruction)
    n = 10
    free = _hf_tokens(model, tok, prompts, n)
    assert GreedyDecoder(model, n, pad_id=tok.pad_token_id)(prompts, batch_size=3) == free
    # an EOS first emitted at step 3 or later (in the longest prompts' rows, which start first, so the rows
    # that join them are left-padded past Gemma's window) and a stop string first emitted at step 6 or later
    # in a row without that EOS: rows end by EOS, by stop string and at max_new_tokens, at different steps
    longest_first = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    eos, _ = _first_seen(tok, [free[i] for i in longest_first], 2)
    _, stop = _first_seen(tok, free, 5, skip=eos)
    expected = _hf_tokens(model, tok, prompts, n, eos, [stop])
    got = GreedyDecoder(model, n, [eos], tok.pad_token_id, StopStrings(tok, [stop]))(prompts, batch_size=3)
    ends = set()
    for row, hf_row in zip(got, expected):
        assert hf_row[:len(row)] == row
        assert all(t == tok.pad_token_id for t in hf_row[len(row):])  # generate pads a row once it ended
        ends.add("eos" if row[-1] == eos else "stop" if stop in tok.decode(row) else "max")
    assert ends == {"eos", "stop", "max"}
    assert len({len(row) for row in got}) >= 3


def test_generator_engines_give_the_same_strings(family_lm, mirror, monkeypatch):
    model, tok = family_lm
    prompts = _prompts(mirror, tok)
    free = _hf_tokens(model, tok, prompts, 12)
    stops = [_first_seen(tok, free, 4)[1], _first_seen(tok, free[1:], 7)[1], "\n"]
    # generate(eos_token_id=tokenizer's) ignores the generation config's other EOS ids, and so must the decoder
    monkeypatch.setattr(model.generation_config, "eos_token_id", [tok.eos_token_id, free[1][2]])
    outputs = {}
    for engine in ("hf", "compact"):
        gen = GreedyGenerator(model, tok, batch_size=4, max_new_tokens=12, engine=engine)
        done = []
        outputs[engine] = gen.generate(prompts, until=stops, progress=done.append)
        assert sum(done) == len(prompts)
    assert outputs["compact"] == outputs["hf"]
    assert len({len(text) for text in outputs["hf"]}) > 3


def test_generation_config_with_logits_processors_uses_generate(tiny_model, tiny_tokenizer, monkeypatch):
    assert GreedyGenerator(tiny_model, tiny_tokenizer).engine == "compact"
    with pytest.raises(ValueError, match="unknown generation engine 'vllm'; known: compact, hf"):
        GreedyGenerator(tiny_model, tiny_tokenizer, engine="vllm")
    monkeypatch.setattr(tiny_model.generation_config, "repetition_penalty", 1.3)
    assert logits_options(tiny_model.generation_config) == ["repetition_penalty"]
    assert GreedyGenerator(tiny_model, tiny_tokenizer).engine == "hf"


@pytest.mark.parametrize("name", ["llama3", "qwen3", "gemma3"])
def test_stop_strings_seen_in_the_tail_at_the_step_the_whole_text_has_them(name, mirror, tmp_path_factory):
    tok = real_tokenizer(mirror, name, tmp_path_factory.mktemp(f"stops-{name}"))
    text = "埃胡德·乌尔博士提醒，这项研究仍处在早期阶段。\n\nSwali: 糖尿病 ist eine Krankheit.\nAntwort: 18"
    tokens = tok.encode(text, add_special_tokens=False)
    # special tokens decode to nothing: a run of them inside an occurrence of "Krankheit.\nAnt" is passed over
    cut = next(i for i in range(len(tokens)) if "Krank" in tok.decode(tokens[:i]))
    tokens = tokens[:cut] + [tok.pad_token_id] * 30 + tokens[cut:]
    cases = (["\n"], ["\n\n"], ["研究仍处在"], ["Swali:"], ["Krankheit.\nAnt"], ["18"], ["早期阶段。", "Swali"])
    for stops in cases:
        check = StopStrings(tok, stops)
        ends = range(1, len(tokens) + 1)
        texts = {end: tok.decode(tokens[:end], skip_special_tokens=True) for end in ends}
        first = next(end for end in ends if any(s in texts[end] for s in stops))
        assert [end for end in ends if check.found([tokens[:end]])[0]][0] == first, stops
