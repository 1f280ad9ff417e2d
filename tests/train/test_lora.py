"""LoRA stage 1: only the adapters and the language-matching head train, and the written model is the
base plus the merged adapters (each targeted weight moved by a matrix of rank <= r, nothing else moved)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate.utils import set_seed
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from alignx.model.alignx_model import AlignXModel
from alignx.profiles import parse_config
from alignx.train.training_stages import train_stage1
from tests.train.tiny import LANGS

R = 4


def _cfg(run_root: Path, **lora):
    return parse_config({
        "name": "lora", "languages": list(LANGS), "run_root": str(run_root),
        "stage1": {"align_layer": 2, "lam_width": 16,
                   "train": {"steps": 3, "micro_batch_size": 4, "lr": 5e-3, "max_length": 160, "log_every": 1,
                             "lora": {"r": R, "alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"], **lora}}}})


def test_lora_trains_adapters_and_head_only_and_writes_the_merged_model(tiny_llama_dir, shards, tmp_path):
    cfg = _cfg(tmp_path)
    out = tmp_path / "alignx"
    train_stage1(str(tiny_llama_dir), shards, cfg, out)
    base, trained = load_file(Path(tiny_llama_dir) / "model.safetensors"), load_file(out / "model.safetensors")
    assert trained.keys() == base.keys()  # a plain checkpoint: no adapter tensors left
    targeted = [k for k in base if any(f"{t}.weight" in k for t in ("q_proj", "v_proj", "down_proj"))]
    assert len(targeted) == 3 * 3  # three targets in each of the three layers
    for k in base:
        delta = (trained[k] - base[k]).double()
        if k not in targeted:
            assert torch.equal(trained[k], base[k]), f"{k} is frozen under LoRA but changed"
            continue
        singular = torch.linalg.svdvals(delta)
        assert singular[0] > 1e-5, f"{k}: its adapter did not train"
        # merged = W + (alpha / r) B @ A: the change has rank <= r (full fine-tuning would be full rank)
        assert int((singular > 1e-4 * singular[0]).sum()) <= R, (k, singular[: R + 2])
    # the head trained from the same initialisation as without LoRA (adapters are added after it)
    set_seed(cfg.stage1.train.seed)
    lm = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    initial = AlignXModel(lm, 2, lam_width=16).lam_head.state_dict()
    head = load_file(out / "lam_head.safetensors")
    assert head.keys() == initial.keys() and any(not torch.equal(head[k], initial[k]) for k in head)
    # the written model loads as an ordinary transformers model
    assert type(AutoModelForCausalLM.from_pretrained(str(out))).__name__ == "LlamaForCausalLM"


def test_lora_target_that_names_no_layer_is_refused(tiny_llama_dir, shards, tmp_path):
    with pytest.raises(ValueError, match=r"lora.target_modules \['query'\] name no linear layer.*q_proj"):
        train_stage1(str(tiny_llama_dir), shards, _cfg(tmp_path, target_modules=["query"]), tmp_path / "out")
