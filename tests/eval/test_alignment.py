"""Alignment metrics: retrieval and cosine gap per layer, pooling over spans, both encodings."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from alignx.config import ConfigError
from alignx.profiles import parse_config
from alignx.eval.sources import parallel_file, read_parallel
from alignx.eval.alignment import (
    encode_alone,
    encode_in_prompt,
    evaluate_alignment,
    hidden_states_at,
    pooled_states,
    resolve_layers,
    retrieval_scores,
)


def test_identical_representations_retrieve_perfectly():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 200, 16)).astype(np.float32)
    scores = retrieval_scores(x, x.copy())
    assert scores.x2en_top1.shape == (3, 200)
    assert scores.x2en_top1.mean() == 1.0 and scores.en2x_top1.mean() == 1.0
    assert (scores.cos_gap > 0.5).all()


def test_random_representations_are_near_chance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 300, 32)).astype(np.float32)
    e = rng.normal(size=(2, 300, 32)).astype(np.float32)
    scores = retrieval_scores(x, e)
    assert scores.x2en_top1.mean() < 0.03 and scores.en2x_top1.mean() < 0.03  # chance is 1/300
    assert abs(float(scores.cos_gap.mean())) < 0.02
    by_layer = scores.by_layer()
    assert set(by_layer) == {"layers", "x2en_top1", "en2x_top1", "cos_gap"} and len(by_layer["cos_gap"]) == 2
    assert by_layer["layers"] == [0, 1]


def test_cos_gap_is_pair_minus_mean_of_other_pairs():
    x = np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]], dtype=np.float32)
    e = np.array([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]], dtype=np.float32)
    s = 1 / np.sqrt(2)
    sim = np.array([[1, 1, 0], [0, 0, 1], [s, s, s]])
    expected = [sim[i, i] - (sim[i].sum() - sim[i, i]) / 2 for i in range(3)]
    np.testing.assert_allclose(retrieval_scores(x, e).cos_gap[0], expected, atol=1e-6)


def test_pooling_in_batches_equals_one_sentence_at_a_time(mirror, tiny_model, tiny_tokenizer):
    texts = read_parallel("flores", ["en", "de"], mirror, limit=6)["de"]
    ids, spans = encode_alone(tiny_tokenizer, texts)
    assert all(s == 1 and e == len(i) for (s, e), i in zip(spans, ids))  # BOS left out of the mean
    batched = pooled_states(tiny_model, ids, spans, batch_size=4)
    assert batched.shape == (tiny_model.config.num_hidden_layers + 1, 6, tiny_model.config.hidden_size)
    for k, (seq, (s, e)) in enumerate(zip(ids, spans)):
        with torch.no_grad():
            hidden = tiny_model(torch.tensor([seq]), output_hidden_states=True).hidden_states
        alone = np.stack([h[0, s:e].mean(0).numpy() for h in hidden])
        np.testing.assert_allclose(batched[:, k], alone, atol=1e-5)


def test_prompt_encoding_pools_over_the_sentence_span(tiny_tokenizer):
    texts = ["Der Hund schläft.", "那人打开水龙头。"]
    ids, spans = encode_in_prompt(tiny_tokenizer, texts, "de", "en", 512)
    for seq, (s, e), text in zip(ids, spans, texts):
        assert tiny_tokenizer.decode(seq[s:e]) == text
        assert "Translate the following sentence from German to English." in tiny_tokenizer.decode(seq[:s])


def test_alignment_on_flores_both_encodings(mirror, tiny_model, tiny_tokenizer):
    texts = read_parallel("flores", ["en", "de", "zh"], mirror, limit=12)
    for encoding in ("alone", "prompt"):
        result = evaluate_alignment(tiny_model, tiny_tokenizer, texts, "en", encoding, batch_size=8)
        assert sorted(result) == ["de", "zh"]
        assert result["de"].x2en_top1.shape == (tiny_model.config.num_hidden_layers + 1, 12)
        assert set(np.unique(result["de"].x2en_top1)) <= {0, 1}


def test_parallel_sets_paths_and_errors(mirror, tmp_path):
    assert parallel_file("ntrex", "en") == "ntrex128/newstest2019-src.eng.txt"
    assert parallel_file("ntrex", "zh") == "ntrex128/newstest2019-ref.zho_Hans.txt"
    assert len(read_parallel("ntrex", ["en", "sw"], mirror, limit=5)["sw"]) == 5
    (tmp_path / "flores200").mkdir()
    (tmp_path / "flores200" / "eng_Latn.devtest-head500").write_text("a\nb\nc\n")
    (tmp_path / "flores200" / "deu_Latn.devtest-head500").write_text("a\nb\n")
    with pytest.raises(ValueError, match="not line-aligned .*deu_Latn.devtest-head500: 2"):
        read_parallel("flores", ["en", "de"], tmp_path)
    with pytest.raises(FileNotFoundError, match="zho_Hans.devtest-head500"):
        read_parallel("flores", ["en", "zh"], tmp_path)


# ---------------------------------------------------------------- computing only the reported layers
def _padded(tokenizer, texts, side):
    enc = tokenizer(texts, padding=True, return_tensors="pt", padding_side=side)
    return enc["input_ids"], enc["attention_mask"]


@contextmanager
def lm_head_forbidden(model):
    """Fails the test if anything runs the LM head (alignment never needs the logits)."""
    def refuse(*_):
        raise AssertionError("the LM head was called")

    handle = model.get_output_embeddings().register_forward_hook(refuse)
    try:
        yield
    finally:
        handle.remove()


@pytest.fixture()
def no_vocabulary_projection(tiny_model):
    with lm_head_forbidden(tiny_model):
        yield


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("layers", [[0], [1], [0, 2], [2], [0, 1, 2], [2, 0]])
def test_truncated_forward_equals_the_full_pass(side, layers, tiny_model, tiny_tokenizer):
    from alignx.model.alignx_model import position_ids_from_mask

    ids, mask = _padded(tiny_tokenizer, ["Der Hund schläft.", "那人打开水龙头。", "Mbwa"], side)
    with torch.inference_mode():
        full = tiny_model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                          output_hidden_states=True).hidden_states
    ran = []
    hooks = [block.register_forward_hook(lambda m, a, o, k=k: ran.append(k))
             for k, block in enumerate(tiny_model.get_decoder().layers)]
    try:
        with torch.inference_mode(), lm_head_forbidden(tiny_model):
            got = hidden_states_at(tiny_model, ids, mask, layers)
    finally:
        for h in hooks:
            h.remove()
    assert ran == list(range(max(layers)))  # blocks after the deepest wanted one never run
    assert len(got) == len(layers)
    for k, state in zip(layers, got):
        torch.testing.assert_close(state, full[k], rtol=0, atol=0)


def test_pooling_a_subset_of_layers_equals_those_rows_of_all(mirror, tiny_model, tiny_tokenizer, no_vocabulary_projection):
    texts = read_parallel("flores", ["en", "de"], mirror, limit=5)["de"]
    ids, spans = encode_alone(tiny_tokenizer, texts)
    everything = pooled_states(tiny_model, ids, spans, batch_size=2)
    some = pooled_states(tiny_model, ids, spans, batch_size=2, layers=[0, 1])
    assert some.shape == (2, 5, tiny_model.config.hidden_size)
    np.testing.assert_array_equal(some, everything[[0, 1]])


def test_alignment_at_chosen_layers(mirror, tiny_model, tiny_tokenizer):
    texts = read_parallel("flores", ["en", "de"], mirror, limit=8)
    full = evaluate_alignment(tiny_model, tiny_tokenizer, texts, "en", "prompt", batch_size=4)["de"]
    one = evaluate_alignment(tiny_model, tiny_tokenizer, texts, "en", "prompt", batch_size=4, layers=[1])["de"]
    assert full.layers == (0, 1, 2) and one.layers == (1,) and one.x2en_top1.shape == (1, 8)
    for m in ("x2en_top1", "en2x_top1", "cos_gap"):
        np.testing.assert_array_equal(getattr(one, m)[one.row(1)], getattr(full, m)[full.row(1)])
    assert one.by_layer()["layers"] == [1]
    with pytest.raises(ValueError, match=r"layer 2 was not computed \(computed: \[1\]\)"):
        one.row(2)


def test_layer_specs_resolve_against_the_model_depth():
    assert resolve_layers("all", 4) == [0, 1, 2, 3, 4]
    assert resolve_layers("every-2", 5) == [0, 2, 4, 5]
    assert resolve_layers("every-4", 30, report_layer=15) == [0, 4, 8, 12, 15, 16, 20, 24, 28, 30]
    assert resolve_layers([8, 0, 4], 30, report_layer=15) == [0, 4, 8, 15]
    with pytest.raises(ValueError, match=r"alignment layers \[31\] are out of range 0\.\.30"):
        resolve_layers([0, 31], 30)
    cfg = parse_config({"name": "t", "eval": {"alignment": {"layers": [0, 4, 8]}}})
    assert cfg.eval.alignment.layers == [0, 4, 8]
    assert parse_config({"name": "t"}).eval.alignment.layers == "all"
    for bad in ("every-0", "half", []):
        with pytest.raises(ConfigError, match="layers must be"):
            parse_config({"name": "t", "eval": {"alignment": {"layers": bad}}})


# ---------------------------------------------------------------- the report's retrieval by layer
def _arm_dir(root: Path, name: str, x2en_by_layer: list[float], correct_at_reported: int) -> Path:
    """An eval dir with sparse layers [0, 2, 4] (report layer 2) for align_flores_prompt_de, 4 sentences."""
    out = root / name
    (out / "items").mkdir(parents=True)
    rows = [{"doc_id": i, "x2en_top1": [0, int(i < correct_at_reported), 1], "en2x_top1": [0, 0, 1],
             "cos_gap": [0.0, 0.1, 0.2]} for i in range(4)]
    (out / "items" / "align_flores_prompt_de.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    per_layer = {"layers": [0, 2, 4], "x2en_top1": x2en_by_layer, "en2x_top1": [0.0, 0.0, 1.0], "cos_gap": [0.0, 0.1, 0.2]}
    doc = {"results": {"align_flores_prompt_de": {"x2en_top1": correct_at_reported / 4, "en2x_top1": 0.0, "cos_gap": 0.1}},
           "tasks": {"align_flores_prompt_de": {"group": "align_flores_prompt", "label": "de"}},
           "groups": {}, "alignment": {"flores": {"prompt": {"de": per_layer}}}, "alignment_layer": 2}
    (out / "metrics.json").write_text(json.dumps(doc))
    return out


def test_report_shows_retrieval_by_layer_for_every_arm(tmp_path):
    from alignx.eval.report import ArmEval, build_report

    cfg = parse_config({"name": "t", "eval": {"bootstrap_resamples": 20}})
    dirs = {"base": _arm_dir(tmp_path, "base", [0.0, 0.25, 0.5], 1),
            "control": _arm_dir(tmp_path, "control", [0.0, 0.25, 0.75], 1),
            "alignx": _arm_dir(tmp_path, "alignx", [0.0, 1.0, 1.0], 4)}
    arms = {n: ArmEval.load(n, p) for n, p in dirs.items()}
    assert arms["alignx"].values("align_flores_prompt_de", "x2en_top1") == {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}
    report = build_report(arms, cfg)
    table = report.markdown.split("## Alignment by layer: flores, prompt\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert lines[0] == ("| layer | base X→en | base en→X | control X→en | control en→X | alignx X→en | alignx en→X |")
    assert lines[2:] == ["| 0 | 0.000 | 0.000 | 0.000 | 0.000 | 0.000 | 0.000 |",
                         "| 2 * | 0.250 | 0.000 | 0.250 | 0.000 | 1.000 | 0.000 |",
                         "| 4 | 0.500 | 1.000 | 0.750 | 1.000 | 1.000 | 1.000 |"]
    # the paired difference reads each item's value at the reported layer's position (1), not index 2
    assert any(s.startswith("alignx − control, align_flores_prompt x2en_top1: +0.750") for s in report.summary)
