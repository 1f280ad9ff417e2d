"""The evaluation's pre-flight: every translation prompt and alignment sentence that cannot fit the
model's context is reported at once, before any benchmark runs (not 189 s in, after other benchmarks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignx.data.instructions import encode_examples, translation_instruction
from alignx.eval import runner
from alignx.eval.sources import read_parallel
from alignx.eval.evaluation_plan import plan_evaluation
from alignx.eval.runner import EvalInputError, check_prompt_lengths, evaluate_model
from alignx.eval.translation import translation_prompts

from .conftest import build_model, eval_config

CONTEXT = 300  # the tiny byte-level tokenizer needs 170-390 tokens for a FLORES sentence in the prompt
SENTENCES = 16


@pytest.fixture(scope="module")
def short_context_lm(tmp_path_factory, tiny_tokenizer) -> Path:
    """The tiny model with a context of CONTEXT positions, saved with its tokenizer."""
    model = build_model(len(tiny_tokenizer))
    model.config.max_position_embeddings = CONTEXT
    out = tmp_path_factory.mktemp("short-context-lm")
    model.save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


def _config(tmp_path, eval_fixtures):
    return eval_config(tmp_path, eval_fixtures, benchmarks=["xcopa", "flores"], languages=["th"],
                       limit={"xcopa": 4, "flores": 4}, alignment={"sets": ["flores"], "max_sentences": SENTENCES})


def _prompt_ends(tokenizer, texts: list[str], src: str, tgt: str) -> list[int]:
    rows = [(translation_instruction(src, tgt), t, None) for t in texts]
    return [e.src_span[1] for e in encode_examples(tokenizer, rows, 10**9, add_eos=False)]


def test_overlong_items_stop_the_evaluation_before_any_benchmark(tmp_path, eval_fixtures, short_context_lm,
                                                                 tiny_tokenizer, mirror, monkeypatch):
    ran = []

    def benchmark(*args, **kwargs):
        ran.append(args)
        raise AssertionError("a benchmark ran before the pre-flight check")

    for name in ("evaluate_choice", "evaluate_generation", "evaluate_translation"):
        monkeypatch.setattr(runner, name, benchmark)
    monkeypatch.setattr(runner.align, "evaluate_alignment", benchmark)
    cfg = _config(tmp_path, eval_fixtures)
    with pytest.raises(EvalInputError) as err:
        evaluate_model(str(short_context_lm), cfg, tmp_path / "out")
    assert not ran and not (tmp_path / "out").exists()  # nothing ran, no metrics written

    msg, problems = str(err.value), err.value.problems
    texts = read_parallel("flores", ["en", "th"], mirror, SENTENCES)
    th_ends = _prompt_ends(tiny_tokenizer, texts["th"], "th", "en")
    too_long = [(i, n) for i, n in enumerate(th_ends) if n > CONTEXT]
    assert too_long  # the set-up really has offending Thai sentences
    line = next(p for p in problems if p.startswith("alignment flores prompt (th->en), th sentences"))
    assert f"{len(too_long)} of {SENTENCES} items do not fit in {CONTEXT} tokens" in line
    assert all(f"{i} ({n} tokens)" in line for i, n in too_long)  # every one, with its token count
    assert "eval.alignment.encodings" in line and "bootstrap.model.max_position_embeddings" in line
    assert any(p.startswith("alignment flores prompt (en->th), en sentences") for p in problems)
    room = CONTEXT - cfg.eval.max_new_tokens
    flores = [len(p) for p in translation_prompts(tiny_tokenizer, "th", "en", texts["th"][:4], 10**9)]
    if any(n > room for n in flores):
        line = next(p for p in problems if p.startswith("flores_th-en prompts"))
        assert f"do not fit in {room} tokens" in line and "eval.max_new_tokens" in line
    assert "alone" not in msg  # sentences alone fit (under 240 tokens)


def test_fitting_items_pass(tmp_path, eval_fixtures, tiny_tokenizer, mirror):
    cfg = _config(tmp_path, eval_fixtures)
    plan = plan_evaluation(cfg, mirror)
    check_prompt_lengths(plan, tiny_tokenizer, cfg, 1024)  # no error
    with pytest.raises(EvalInputError, match=r"alignment flores alone, th sentences: \d+ of 16 items do not fit in 64"):
        check_prompt_lengths(plan, tiny_tokenizer, cfg, 64)
