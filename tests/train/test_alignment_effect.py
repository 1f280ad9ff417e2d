"""End to end at smoke size: bootstrap a base model, train stage 1 as AlignX and as control, compare.

What L_ctr optimises, measured on held-out pairs in the training format: top-1 retrieval between the
mean-pooled align-layer states of each source span and all target spans. AlignX must clearly beat
the control arm (same steps, same batches, both lambdas 0).
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignx.data.collate import collate
from alignx.data.instructions import TrainExample, encode_examples, translation_instruction
from alignx.model.losses import span_mean
from alignx.profiles import parse_config
from alignx.train.training_stages import bootstrap_base_model, train_stage1
from alignx.training_records import read_log
from tests.train.tatoeba_shards import tatoeba_pairs, write_shards

pytestmark = pytest.mark.slow  # the arms fixture trains three models (about 2.5 min on one core)
LANGS = ["de", "es", "fr", "ru"]
ALIGN_LAYER = 2


@pytest.fixture(scope="module")
def arms(mirror, tmp_path_factory):
    root = tmp_path_factory.mktemp("effect")
    shards = write_shards(root / "shards", {lang: tatoeba_pairs(mirror, lang, 600, skip=1000) for lang in LANGS})
    cfg = parse_config({
        "name": "effect", "run_root": str(root), "languages": LANGS,
        "bootstrap": {"tokenizer": {"vocab_size": 1000},
                      "model": {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 256,
                                "max_position_embeddings": 256},
                      "train": {"steps": 100, "micro_batch_size": 16, "lr": 3e-3, "warmup_steps": 5, "max_length": 64}},
        # Random (not length-grouped) batches: at this scale length-homogeneous batches slow the
        # contrastive signal down several-fold (measured at batch 16: 3% vs 12% held-out top-1).
        "stage1": {"align_layer": ALIGN_LAYER,
                   "train": {"steps": 100, "micro_batch_size": 32, "lr": 3e-3, "warmup_steps": 5, "max_length": 128,
                             "group_by_length": False}},
    })
    base = bootstrap_base_model(shards, cfg, root / "base")
    alignx = train_stage1(base.path, shards, cfg, root / "alignx")
    control = train_stage1(base.path, shards, cfg, root / "control", control=True)
    return base, alignx, control


def retrieval_top1(model_dir, mirror) -> float:
    """Mean top-1 accuracy, source span -> target span, over 100 held-out pairs per language."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lm = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    accuracies = []
    for lang in LANGS:
        held_out = tatoeba_pairs(mirror, lang, 100, skip=5000)
        rows = [(translation_instruction(lang, "en"), x, e) for x, e in held_out]
        encoded = [e for e in encode_examples(tokenizer, rows, 256) if e.src_span and e.tgt_span]
        batch = collate([TrainExample(e) for e in encoded], tokenizer.pad_token_id, "right")
        with torch.no_grad():
            states = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        output_hidden_states=True).hidden_states[ALIGN_LAYER]
        hx = F.normalize(span_mean(states, batch["src_span"]), dim=-1)
        hy = F.normalize(span_mean(states, batch["tgt_span"]), dim=-1)
        accuracies.append(float((hx @ hy.T).argmax(1).eq(torch.arange(len(encoded))).float().mean()))
    return sum(accuracies) / len(accuracies)


def test_bootstrap_base_model_loads_with_auto_classes(arms):
    base = arms[0]
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    ids = tokenizer("Ich bin müde. Я устал.")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and len(ids) > 3 and tokenizer.unk_token_id not in ids
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(base.path)
    assert model.config.num_hidden_layers == 4 and model.config.vocab_size == len(tokenizer)
    log = read_log(f"{base.path}/train_log.jsonl")
    assert len(log) == 100 and log[-1]["lm"] < log[0]["lm"] - 1.0
    assert json.loads(open(f"{base.path}/alignx.json").read())["stage"] == "bootstrap"


def test_control_and_alignx_see_identical_batches(arms):
    _, alignx, control = arms
    log_a, log_c = read_log(f"{alignx.path}/train_log.jsonl"), read_log(f"{control.path}/train_log.jsonl")
    assert [r["batches"] for r in log_a] == [r["batches"] for r in log_c]
    assert log_a[0]["lm"] == pytest.approx(log_c[0]["lm"], abs=1e-6)  # same start, same first batch
    assert control.meta["control"] is True and alignx.meta["control"] is False
    # the control arm measures L_ctr without optimising it; AlignX drives it down
    assert alignx.meta["ctr"] < 0.6 * control.meta["ctr"]


def test_alignx_raises_held_out_retrieval_above_control(arms, mirror):
    base, alignx, control = arms
    acc_alignx, acc_control = retrieval_top1(alignx.path, mirror), retrieval_top1(control.path, mirror)
    # measured (seeds 0, 1): AlignX 9.0%, 13.5%; control 2.3%, 2.3% (chance 1%)
    assert acc_alignx >= 0.06, (acc_alignx, acc_control)
    assert acc_alignx >= 2.5 * acc_control, (acc_alignx, acc_control)
