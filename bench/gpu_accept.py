"""GPU acceptance run: the training and evaluation paths on one CUDA GPU, self-contained, within minutes.

Needs no data set, no downloaded model and no earlier run (the device machine has none of them):
models are built from published configurations with random weights, examples are random token
sequences with the stage-1 spans laid out as the collator expects. Three checks:

1. ``train_1b``: stage 1 (the AlignX objective: L_lm + L_ctr + L_lam) of a Llama-3.2-1B-shaped model
   through the training loop with ``sharding: fsdp`` in bf16 (fp32 master weights and AdamW), micro-
   batches of 8 x 512. Reports tokens/s, MFU against the card's own bf16 peak (looked up from its
   name; ``--peak-tflops`` overrides), and the peak memory against the memory plan for that stage.
   Fails when the loss is not finite or does not fall, or when the peak exceeds the plan (a plan that
   says yes must never be exceeded).
2. ``bf16_vs_fp32``: stage 1 of SmolLM2-135M's architecture, the same steps in float32 and in bf16
   autocast; per-step losses must agree within 3%.
3. ``eval_bf16``: the evaluation's log-likelihood scorer on the same weights in float32 and bfloat16;
   summed log-probabilities must agree within 2% and the preferred of two continuations mostly agree.

Prints one JSON line and exits 1 when a check fails. ``--dry-run`` runs the same code on the CPU with
tiny models (CI runs it: tests/test_gpu_accept.py).

    python bench/gpu_accept.py [--dry-run] [--steps 30]

On a lent device machine (its Python has torch, transformers, accelerate and peft, not pydantic):
carry pydantic's wheels (pydantic, pydantic-core, annotated-types, typing-inspection) as the device
README describes, then ``PYTHONPATH=/tmp/site:. python3 bench/gpu_accept.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

# dense bf16 tensor-core peaks (TFLOP/s, no sparsity) by a name fragment of torch.cuda.get_device_name()
PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "GH200": 989.0, "B200": 2250.0,
               "A100": 312.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0,
               "RTX 4090": 165.0, "RTX 6000 Ada": 364.0, "V100": 125.0}

LLAMA_1B = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True,
                max_position_embeddings=8192, rope_theta=500000.0)
SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True, max_position_embeddings=8192)
TINY = dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=512)


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    for fragment in sorted(PEAK_TFLOPS, key=len, reverse=True):  # "H100 PCIe" before "H100"
        if fragment in name:
            return PEAK_TFLOPS[fragment]
    return None


def synthetic_examples(n: int, length: int, vocab: int, seed: int):
    """Random token rows laid out as stage-1 examples: prompt (source span inside), then the response."""
    from alignx.data.instructions import EncodedExample, TrainExample

    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = torch.randint(10, vocab, (length,), generator=g).tolist()
        prompt = length // 2
        enc = EncodedExample(input_ids=ids, prompt_len=prompt, src_span=(4, prompt - 2), tgt_span=(prompt, length - 1))
        out.append(TrainExample(enc, src_lang=i % 2, tgt_lang=1 - i % 2))
    return out


def build(config: dict, device: str, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        return LlamaForCausalLM(LlamaConfig(**config)).float()


def stage1(lm, examples, train_cfg, work: Path, align_layer: int, lam_width: int):
    """The AlignX objective through the training loop; returns the log rows."""
    from alignx.model.alignx_model import AlignXModel
    from alignx.train.loop import train
    from alignx.training_records import read_log

    torch.manual_seed(0)
    objective = AlignXModel(lm, align_layer, tau=0.1, lambda_ctr=1.0, lambda_lam=0.4, lam_width=lam_width)
    result = train(objective, examples, 0, train_cfg, work, run_key="gpu-accept")
    return read_log(result.log_path)


def check_train_1b(args, device: str, work: Path) -> dict:
    from alignx.config import TrainConfig
    from alignx.memory_plan import estimate, shape_from_config
    from transformers import LlamaConfig

    config, micro, length = (TINY, 4, 64) if args.dry_run else (LLAMA_1B, 8, 512)
    cfg = TrainConfig(steps=args.steps, micro_batch_size=micro, max_length=length, lr=1e-4, warmup_steps=2,
                      mixed_precision="bf16", sharding="fsdp", checkpoint_every=10**6, log_every=1,
                      group_by_length=False, grad_clip=1.0)
    lm = build(config, device)
    params = sum(p.numel() for p in lm.parameters())
    examples = synthetic_examples(micro * args.steps, length, config["vocab_size"], seed=1)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rows = stage1(lm, examples, cfg, work / "train_1b", config["num_hidden_layers"] // 2, 128)
    timed = rows[2:] or rows  # the first steps compile kernels and warm the allocator
    tokens_s = sum(r["tokens"] for r in timed) / sum(r["step_s"] for r in timed)
    # per token: 6 N for the matrix products (embedding lookup excluded, lm head included) and the
    # attention's scores and values, 12 L h T (forward and backward)
    matmul = params - (0 if config["tie_word_embeddings"] else config["vocab_size"] * config["hidden_size"])
    flops_token = 6 * matmul + 12 * config["num_hidden_layers"] * config["hidden_size"] * length
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = peak_tflops(name, args.peak_tflops) if device == "cuda" else None
    plan = estimate(shape_from_config(LlamaConfig(**config), "gpu-accept"), cfg, "fsdp", 1,
                    "cuda" if device == "cuda" else "cpu", stage1_head_width=128)
    measured = torch.cuda.max_memory_allocated() if device == "cuda" else None
    losses = [r["loss"] for r in rows]
    head, tail = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    problems = []
    if not all(math.isfinite(x) for x in losses):
        problems.append("a loss is not finite")
    if not tail < head:
        problems.append(f"the loss did not fall ({head:.3f} -> {tail:.3f})")
    if measured is not None and measured > plan.total:
        problems.append(f"peak memory {measured / 2**30:.2f} GiB exceeds the plan's {plan.total / 2**30:.2f} GiB")
    return {"ok": not problems, "problems": problems, "device": name, "params_m": round(params / 1e6, 1),
            "micro_batch": [micro, length], "steps": len(rows), "tokens_per_s": round(tokens_s, 1),
            "tflops": round(tokens_s * flops_token / 1e12, 2),
            "mfu": None if peak is None else round(tokens_s * flops_token / (peak * 1e12), 3),
            "peak_tflops": peak, "peak_memory_gib": None if measured is None else round(measured / 2**30, 2),
            "plan_gib": round(plan.total / 2**30, 2),
            "plan_over_measured": None if measured is None else round(plan.total / measured, 2),
            "loss_first3": round(head, 4), "loss_last3": round(tail, 4)}


def check_bf16_vs_fp32(args, device: str, work: Path) -> dict:
    from alignx.config import TrainConfig

    config, micro, length = (TINY, 4, 64) if args.dry_run else (SMOLLM2, 8, 96)
    steps = min(args.steps, 10)
    examples = synthetic_examples(micro * steps, length, config["vocab_size"], seed=2)
    logs = {}
    for precision in ("no", "bf16"):
        cfg = TrainConfig(steps=steps, micro_batch_size=micro, max_length=length, lr=5e-5, warmup_steps=2,
                          mixed_precision=precision, checkpoint_every=10**6, log_every=1, group_by_length=False)
        logs[precision] = [r["loss"] for r in stage1(build(config, device), examples, cfg, work / f"smol-{precision}",
                                                     config["num_hidden_layers"] // 2, 128)]
    worst = max(abs(a - b) / abs(a) for a, b in zip(logs["no"], logs["bf16"]))
    return {"ok": worst < 0.03, "problems": [] if worst < 0.03 else [f"bf16 losses differ from float32 by up to "
                                                                      f"{worst:.1%} (allowed 3%)"],
            "steps": steps, "max_rel_diff": round(worst, 5), "fp32": [round(x, 4) for x in logs["no"]],
            "bf16": [round(x, 4) for x in logs["bf16"]]}


def check_eval_bf16(args, device: str) -> dict:
    from alignx.eval.loglik import EncodedRequest, LoglikelihoodScorer

    config = TINY if args.dry_run else SMOLLM2
    lm = build(config, device).eval()
    g = torch.Generator().manual_seed(3)
    requests = []
    for _ in range(32):  # contexts with two continuations each, as a two-choice benchmark asks
        context = tuple(torch.randint(10, config["vocab_size"], (40,), generator=g).tolist())
        for _ in range(2):
            requests.append(EncodedRequest(context, tuple(torch.randint(10, config["vocab_size"], (8,), generator=g).tolist())))
    tokenizer = SimpleNamespace(pad_token_id=0)
    scores = {}
    for dtype in (torch.float32, torch.bfloat16):
        scorer = LoglikelihoodScorer(lm.to(dtype), tokenizer, batch_size=16, max_length=256)
        scores[dtype] = [s[0] for s in scorer.score_encoded(requests)]
    a, b = scores[torch.float32], scores[torch.bfloat16]
    worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
    agree = sum((a[i] > a[i + 1]) == (b[i] > b[i + 1]) for i in range(0, len(a), 2)) / (len(a) // 2)
    return {"ok": worst < 0.02, "problems": [] if worst < 0.02 else [f"bf16 log-probabilities differ by up to "
                                                                      f"{worst:.1%} (allowed 2%)"],
            "requests": len(requests), "max_rel_diff": round(worst, 5), "choice_agreement": round(agree, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="the same checks on the CPU with tiny models")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak, if unlisted")
    args = parser.parse_args()
    if args.dry_run:
        args.steps = min(args.steps, 6)
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"ok": False, "problems": ["no CUDA device (use --dry-run on a CPU)"]}))
        return 1
    started = time.monotonic()
    checks = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in (("train_1b", lambda: check_train_1b(args, device, Path(tmp))),
                          ("bf16_vs_fp32", lambda: check_bf16_vs_fp32(args, device, Path(tmp))),
                          ("eval_bf16", lambda: check_eval_bf16(args, device))):
            try:
                checks[name] = run()
            except Exception as exc:  # one broken check does not hide the others' figures
                checks[name] = {"ok": False, "problems": [f"{type(exc).__name__}: {exc}"]}
            if device == "cuda":
                torch.cuda.empty_cache()
    ok = all(c["ok"] for c in checks.values())
    print(json.dumps({"ok": ok, "dry_run": args.dry_run, "torch": torch.__version__,
                      "wall_s": round(time.monotonic() - started, 1), **checks}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
