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
from alignx.training_records import read_run_record
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


def test_lora_checkpoint_holds_the_trainable_tensors_only_and_resumes_exactly(tiny_llama_dir, shards, tmp_path):
    """A LoRA run's checkpoint leaves the frozen base out (the resumed run rebuilds it from the base
    model); a run killed after its checkpoint ends where an uninterrupted one does."""
    from alignx.train.checkpoint import CHECKPOINT_DIR, STATE_FILE
    from alignx.train.training_stages import work_dir_for

    def cfg(root):
        c = _cfg(root)
        return c.model_copy(update={"stage1": c.stage1.model_copy(update={"train": c.stage1.train.model_copy(
            update={"steps": 4, "checkpoint_every": 2})})})

    straight = tmp_path / "straight" / "alignx"
    train_stage1(str(tiny_llama_dir), shards, cfg(tmp_path / "straight"), straight)

    crashed = tmp_path / "crashed" / "alignx"

    def crash_after_checkpoint(step, total, metrics):
        if step == 3:
            raise KeyboardInterrupt  # the run dies after its step-2 checkpoint

    with pytest.raises(KeyboardInterrupt):
        train_stage1(str(tiny_llama_dir), shards, cfg(tmp_path / "crashed"), crashed, progress=crash_after_checkpoint)
    saved = torch.load(work_dir_for(crashed) / CHECKPOINT_DIR / STATE_FILE, weights_only=False)["model"]
    assert saved and all("lora_" in k or k.startswith("lam_head.") for k in saved), sorted(saved)[:5]
    base_bytes = sum(v.numel() for v in load_file(Path(tiny_llama_dir) / "model.safetensors").values())
    assert sum(v.numel() for v in saved.values()) < 0.2 * base_bytes

    train_stage1(str(tiny_llama_dir), shards, cfg(tmp_path / "crashed"), crashed)
    assert read_run_record(crashed)["resumed_from"] == 2
    a, b = load_file(straight / "model.safetensors"), load_file(crashed / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def test_lora_under_bf16_keeps_the_frozen_base_in_bf16_and_writes_exact_float32_weights(tiny_llama_dir, shards,
                                                                                        tmp_path, monkeypatch):
    """The base trains in bf16 (half the memory), adapters and head in float32; the written model is the
    float32 checkpoint plus the merged adapters: untargeted weights exactly the checkpoint's."""
    from alignx.train import training_stages

    loaded = []
    load_lm = training_stages.load_lm
    monkeypatch.setattr(training_stages, "load_lm", lambda *a, **k: loaded.append(load_lm(*a, **k)) or loaded[-1])
    cfg = _cfg(tmp_path)
    cfg = cfg.model_copy(update={"stage1": cfg.stage1.model_copy(update={"train": cfg.stage1.train.model_copy(
        update={"mixed_precision": "bf16"})})})
    out = tmp_path / "alignx"
    train_stage1(str(tiny_llama_dir), shards, cfg, out)
    (lm,) = loaded
    frozen = {p.dtype for n, p in lm.named_parameters() if "lora_" not in n}
    adapters = {p.dtype for n, p in lm.named_parameters() if "lora_" in n}
    assert frozen == {torch.bfloat16} and adapters == {torch.float32}
    base, trained = load_file(Path(tiny_llama_dir) / "model.safetensors"), load_file(out / "model.safetensors")
    assert {v.dtype for v in trained.values()} == {torch.float32}
    targeted = [k for k in base if any(f"{t}.weight" in k for t in ("q_proj", "v_proj", "down_proj"))]
    for k in base:
        if k not in targeted:  # bit for bit: not the bf16-rounded copy trained on
            assert torch.equal(trained[k], base[k]), k
        else:
            assert not torch.equal(trained[k], base[k]), k
            assert (trained[k] - base[k]).abs().max() < 0.1, k  # the adapters' delta, not a rounding of all of W
    assert {v.dtype for v in load_file(out / "lam_head.safetensors").values()} == {torch.float32}
