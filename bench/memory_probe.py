"""Peak memory of real CPU training steps (tests/test_memory_plan.py, bench/scale.py): ``python memory_probe.py JSON``.

JSON is a list of {"model_type", "config", "batch", "seq", "pad"[, "lora"]} (with "lora": adapters on
the model, only they train). For each model: a one-layer warm-up
of the same architecture (so code pages and one-time buffers are in the baseline), then the baseline,
the peak reset (/proc/self/clear_refs 5), a short step that allocates the gradients and AdamW's state,
and a full padded step, measured. Run with MALLOC_MMAP_THRESHOLD_=65536 so freed tensors go back to
the system and resident memory follows live tensors. Prints one JSON list: bytes over the baseline
after building the model, after the steps (params + grads + optimizer state) and at the peak.
"""

from __future__ import annotations

import gc
import json
import sys

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from alignx.model.losses import lm_loss

# Two architectures of about 20-25M parameters; padded batches of 4 x 128 as the loop collates them.
# Llama: GQA (4 of 8 kv heads), untied; Qwen3: q/k norms, GQA (2 of 8), tied embeddings.
MODELS = {
    "llama": {"model_type": "llama", "config": {
        "vocab_size": 16000, "hidden_size": 512, "num_hidden_layers": 3, "num_attention_heads": 8,
        "num_key_value_heads": 4, "intermediate_size": 1376, "tie_word_embeddings": False}},
    "qwen3": {"model_type": "qwen3", "config": {
        "vocab_size": 16000, "hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8,
        "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 1536, "tie_word_embeddings": True}},
}
BATCH, SEQ, PAD = 4, 128, 5
# LoRA on the Llama: r 16 on every projection (adapters, their AdamW state and the frozen base)
LORA = {"r": 16, "alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                 "down_proj"]}
PROBES = [*MODELS, "llama-lora"]  # the probe's results, in order


def probe_command(repo: str) -> tuple[list[str], dict[str, str]]:
    """How to run this probe on MODELS in a fresh process: argv and environment (freed memory returned
    to the system, one thread)."""
    import os

    specs = [{**spec, "batch": BATCH, "seq": SEQ, "pad": PAD} for spec in MODELS.values()]
    specs.append({**MODELS["llama"], "batch": BATCH, "seq": SEQ, "pad": PAD, "lora": LORA})
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": repo}
    return [sys.executable, __file__, json.dumps(specs)], env


def memory() -> dict[str, int]:
    fields = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssFile"):
                fields[key] = int(value.split()[0]) * 1024
    return fields


def batch(vocab: int, size: int, seq: int, pad: int) -> dict[str, torch.Tensor]:
    """Random tokens, the first row left-padded by ``pad``, as the training loop's collation pads."""
    ids = torch.randint(0, vocab, (size, seq), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(size, seq, dtype=torch.long)
    mask[0, :pad] = 0
    return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
            "labels": ids.masked_fill(mask == 0, -100)}


def train(config, size: int, seq: int, pad: int, lora: dict | None = None) -> tuple[int, int]:
    """Build, take a short step and a full one as the stage loop does; RSS after building and after the steps."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    if lora:
        from alignx.config import LoraConfig
        from alignx.model.lora import add_adapters

        add_adapters(model, LoraConfig(**lora))
    model.train()
    built = memory()["VmRSS"]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    for seq_len, pad_len in ((8, 1), (seq, pad)):
        b = batch(config.vocab_size, size, seq_len, pad_len)
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], position_ids=b["position_ids"],
                    output_hidden_states=True, use_cache=False)
        logits = out.logits
        del out
        loss = lm_loss(logits, b["labels"])
        del logits
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # gradients stay resident, as the plan counts them
    return built, memory()["VmRSS"]


def main() -> None:
    torch.set_num_threads(1)
    results = []
    for spec in json.loads(sys.argv[1]):
        fields = dict(spec["config"])
        config = AutoConfig.for_model(spec["model_type"], **fields)
        warm = AutoConfig.for_model(spec["model_type"], **{**fields, "num_hidden_layers": 1, "vocab_size": 512})
        train(warm, 2, 16, 2)
        gc.collect()
        base = memory()
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets VmHWM to the current resident size
        except OSError:  # kernel or sandbox without it: the warm-up's peak is small beside the measured one
            pass
        built, after = train(config, spec["batch"], spec["seq"], spec["pad"], spec.get("lora"))
        end = memory()
        results.append({"built": built - base["VmRSS"], "static": after - base["VmRSS"],
                        "peak": end["VmHWM"] - base["VmRSS"], "file_growth": end["RssFile"] - base["RssFile"]})
        gc.collect()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
