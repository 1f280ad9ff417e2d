"""Stage 1, stage 2 and evaluation on tiny random Llama 3, Qwen3 and Gemma 3 models with real vocabularies.

Each family runs once per session (``run``): stage 1 (AlignX), stage 2 from it, and the evaluation
of the stage-2 checkpoint; the tests then check what could differ between families: every
parameter trains, checkpoints reload to the same logits, tied embeddings stay tied, left and right
padding give the same states and losses (position ids under left padding, sliding windows), the
alignment read-out stops before the LM head, shared-context scoring respects a sliding window, and
the evaluation writes its metrics.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignx.artefacts import Artefact
from alignx.data.collate import collate
from alignx.data.instructions import encode_rows, translation_rows
from alignx.data.schema import read_split
from alignx.eval.alignment import hidden_states_at
from alignx.eval.loglik import EncodedRequest, LoglikelihoodScorer
from alignx.eval.runner import evaluate_model
from alignx.model.alignx_model import AlignXModel, position_ids_from_mask
from alignx.model.losses import span_mean
from alignx.profiles import parse_config
from alignx.train import training_stages
from alignx.training_records import read_log
from tests.eval.test_alignment import lm_head_forbidden
from tests.train.real_arch import FAMILIES, Family, build_base
from tests.train.tiny import LANGS

ALIGN_LAYER = 2


def _cfg(tmp: Path):
    train = {"steps": 2, "micro_batch_size": 4, "lr": 1e-3, "max_length": 128, "log_every": 1}
    return parse_config({
        "name": "real-arch", "run_root": str(tmp), "languages": list(LANGS),
        "stage1": {"align_layer": ALIGN_LAYER, "lam_width": 16, "max_examples": 16, "train": train},
        "stage2": {"translation_pairs_per_lang": 1, "train": {**train, "micro_batch_size": 2, "mask_prompt": True}},
        "eval": {"benchmarks": ["xcopa", "flores"], "languages": ["zh"],
                 "limit": {"xcopa": 4, "flores": 2}, "max_new_tokens": 4, "batch_size": 8,
                 "alignment": {"sets": ["flores"], "max_sentences": 8}, "bootstrap_resamples": 10},
        "data": {"langid": {"cache_dir": str(tmp / "fasttext")}},
    })


@dataclass
class FamilyRun:
    family: Family
    cfg: object
    base: Path
    stage1: Artefact
    stage2: Artefact
    evaluation: Artefact
    trained: dict  # stage -> the in-memory causal LM the stage trained (and saved)
    base_tokenizer: object  # as built
    tokenizer: object  # reloaded from the stage-2 checkpoint
    examples: list  # stage-1 examples of different lengths (padding differs between rows)


@pytest.fixture(scope="session", params=list(FAMILIES))
def run(request, mirror, shards, tmp_path_factory) -> FamilyRun:
    family = FAMILIES[request.param]
    tmp = tmp_path_factory.mktemp(family.name)
    cfg = _cfg(tmp)
    base, base_tokenizer = build_base(mirror, family, tmp / "base")
    loaded = []
    load = training_stages._load

    def keep_model(model: str, train_cfg=None):  # the stage's own model object, to compare with what it saved
        tokenizer, lm = load(model, train_cfg)
        loaded.append(lm)
        return tokenizer, lm

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training_stages, "_load", keep_model)
        s1 = training_stages.train_stage1(str(base), shards, cfg, tmp / "stage1")
        s2 = training_stages.train_stage2(s1.path, shards, cfg, tmp / "stage2")
    evaluation = evaluate_model(s2.path, cfg, tmp / "eval")
    tokenizer = AutoTokenizer.from_pretrained(s2.path)
    return FamilyRun(family, cfg, base, s1, s2, evaluation, {"stage1": loaded[0], "stage2": loaded[1]},
                     base_tokenizer, tokenizer, _batch_examples(shards, tokenizer))


def _state(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(Path(path) / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _batch_examples(shards: Path, tokenizer, n: int = 4):
    """Stage-1 examples of ``n`` different lengths."""
    rows = translation_rows(read_split(shards, "train").groupby("src_lang").head(2).reset_index(drop=True), "en")
    examples = encode_rows(tokenizer, rows, 128, ["en", *LANGS])
    by_length = {len(ex.encoded.input_ids): ex for ex in examples if ex.encoded.tgt_span is not None}
    picked = [by_length[k] for k in sorted(by_length)][::max(1, len(by_length) // n)][:n]
    assert len({len(ex.encoded.input_ids) for ex in picked}) == n
    return picked




# ---------------------------------------------------------------- training
def test_the_tokenizer_survives_the_stages_with_its_pad_token(run):
    tokenizer, original = run.tokenizer, run.base_tokenizer
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id == original.pad_token_id
    assert tokenizer.pad_token_id != tokenizer.eos_token_id  # padding is never an end-of-text target
    for text in ("Der Hund schläft.", "那人打开水龙头。", "Mbwa anakula."):
        ids = tokenizer(text)["input_ids"]
        assert ids and ids == original(text)["input_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert len(tokenizer) == run.trained["stage2"].get_input_embeddings().weight.shape[0]


def test_stage1_trains_every_parameter_with_both_auxiliary_losses(run):
    record = json.loads((Path(run.stage1.path) / "alignx.json").read_text())
    assert record["align_layer"] == ALIGN_LAYER
    for row in read_log(Path(run.stage1.path) / "train_log.jsonl"):
        assert all(math.isfinite(row[k]) for k in ("loss", "lm", "ctr", "lam")), row
        assert row["ctr"] > 0 and row["lam"] > 0 and row["usable"] >= 2, row
        assert row["loss"] == pytest.approx(row["lm"] + 0.3 * row["ctr"] + 0.4 * row["lam"], rel=1e-5)
    for row in read_log(Path(run.stage2.path) / "train_log.jsonl"):
        assert math.isfinite(row["loss"]) and row["ctr"] == 0 and row["lam"] == 0
    base, s1, s2 = _state(run.base), _state(run.stage1.path), _state(run.stage2.path)
    assert set(base) == set(s1) == set(s2)
    assert not [k for k in base if torch.equal(base[k], s1[k])], "parameters stage 1 left unchanged"
    assert not [k for k in base if torch.equal(s1[k], s2[k])], "parameters stage 2 left unchanged"


def test_checkpoints_reload_to_the_logits_of_the_trained_model(run):
    batch = collate(run.examples[:2], run.tokenizer.pad_token_id, "left")
    inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  position_ids=position_ids_from_mask(batch["attention_mask"]))
    for stage, art in (("stage1", run.stage1), ("stage2", run.stage2)):
        reloaded = AutoModelForCausalLM.from_pretrained(art.path, dtype=torch.float32).eval()
        assert type(reloaded) is type(run.trained[stage])
        with torch.no_grad():
            expected = run.trained[stage].eval()(**inputs).logits
            got = reloaded(**inputs).logits
        assert torch.isfinite(got).all()
        assert torch.equal(got, expected), f"{stage}: reloaded logits differ by {(got - expected).abs().max()}"


def test_tied_embeddings_stay_tied(run):
    for stage, art in (("stage1", run.stage1), ("stage2", run.stage2)):
        for lm in (run.trained[stage], AutoModelForCausalLM.from_pretrained(art.path)):
            embed, head = lm.get_input_embeddings().weight, lm.get_output_embeddings().weight
            if run.family.tied:
                assert head is embed or head.data_ptr() == embed.data_ptr(), f"{stage}: LM head came untied"
            else:
                assert not torch.equal(head, embed)
        saved = _state(art.path)
        assert ("lm_head.weight" in saved) is (not run.family.tied)


def test_left_and_right_padding_give_the_same_states_and_losses(run):
    """The training objective's own forward pass, on one batch padded either way (and one row alone)."""
    lm = AutoModelForCausalLM.from_pretrained(run.stage1.path, dtype=torch.float32).eval()
    objective = AlignXModel(lm, ALIGN_LAYER, lam_width=16)
    objective.load_head(Path(run.stage1.path))
    examples = run.examples
    seen = {}
    lm.register_forward_hook(lambda _m, _a, out: seen.update(states=out.hidden_states[ALIGN_LAYER]))
    out, vectors = {}, {}
    for side in ("left", "right"):
        batch = collate(examples, run.tokenizer.pad_token_id, side)
        with torch.no_grad():
            out[side] = objective(batch).as_dict()
        states = seen["states"]
        vectors[side] = torch.cat([span_mean(states, batch["src_span"]), span_mean(states, batch["tgt_span"])])
        real = batch["attention_mask"].bool()
        per_example = [states[row][real[row]] for row in range(len(examples))]
        if side == "left":
            left_rows = per_example
        else:
            for a, b in zip(left_rows, per_example):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(vectors["left"], vectors["right"], rtol=1e-4, atol=1e-5)
    for key in ("lm", "ctr", "lam"):
        assert out["left"][key] == pytest.approx(out["right"][key], rel=1e-4), key
    alone = torch.tensor([examples[0].encoded.input_ids])  # unpadded: the row that gets the most padding
    with torch.no_grad():
        single = hidden_states_at(lm, alone, torch.ones_like(alone), [ALIGN_LAYER])[0][0]
    torch.testing.assert_close(left_rows[0], single, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- evaluation
def test_alignment_read_out_stops_before_the_lm_head(run):
    lm = run.trained["stage2"].eval()
    batch = collate(run.examples, run.tokenizer.pad_token_id, "left")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        full = lm(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                  output_hidden_states=True).hidden_states
        with lm_head_forbidden(lm):
            for layers in ([0, 1], [ALIGN_LAYER], [0, 3]):
                for k, state in zip(layers, hidden_states_at(lm, ids, mask, layers)):
                    torch.testing.assert_close(state, full[k], rtol=0, atol=0)


def test_evaluation_writes_benchmark_and_alignment_metrics(run):
    doc = json.loads((Path(run.evaluation.path) / "metrics.json").read_text())
    results = doc["results"]
    assert set(results["xcopa_zh"]) == {"acc", "acc_norm"}
    assert {"flores_en-zh", "flores_zh-en", "align_flores_alone_zh", "align_flores_prompt_zh"} <= set(results)
    assert all(math.isfinite(results[t]["chrf"]) for t in ("flores_en-zh", "flores_zh-en"))
    assert doc["n-samples"]["xcopa_zh"] == 4 and doc["n-samples"]["align_flores_prompt_zh"] == 8
    assert doc["num_layers"] == 3 and doc["alignment_layer"] == ALIGN_LAYER
    for task in ("align_flores_alone_zh", "align_flores_prompt_zh"):
        assert 0 <= results[task]["x2en_top1"] <= 1 and math.isfinite(results[task]["cos_gap"])
    assert len(doc["alignment"]["flores"]["prompt"]["zh"]["en2x_top1"]) == 4  # hidden_states 0..3


def test_shared_context_scoring_equals_one_sequence_per_request(run):
    """Packed contexts (a 4D mask, which bypasses a sliding window) must score as plain sequences do.

    The first batch (the longest packed row) fits Gemma's 16-token window as plain sequences, so the
    scorer's one-time probe passes; the second one's plain sequence does not.
    """
    lm = run.trained["stage2"].eval()
    text = run.tokenizer("The quick brown fox jumps over the lazy dog near the river bank, and then it runs "
                         "far away into the green forest beyond the hills.")["input_ids"]
    assert len(text) >= 25
    requests = [EncodedRequest(tuple(text[:10]), tuple(text[10 + k:15 + k])) for k in range(4)]
    requests.append(EncodedRequest(tuple(text[:20]), tuple(text[20:23])))
    packed = LoglikelihoodScorer(lm, run.tokenizer, batch_size=4, share_context=True).score_encoded(requests)
    plain = LoglikelihoodScorer(lm, run.tokenizer, batch_size=4, share_context=False).score_encoded(requests)
    for (a, _), (b, _) in zip(packed, plain):
        assert a == pytest.approx(b, abs=1e-4)
