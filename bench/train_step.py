"""Step time and peak memory of a plain LM step versus an AlignX stage-1 step, and L_lam naive vs ours.

Prints ONE JSON line. Each variant runs in its own subprocess: on CPU torch keeps no allocator
statistics and ru_maxrss never falls inside a process, so a fresh process per variant is the only
honest peak. ``peak_mb`` is the process's peak RSS; ``step_mb`` the part above the RSS after model
and optimizer state were built (activations, gradients, temporaries of the step itself).

    .venv/bin/python bench/train_step.py                 # batch 32, seq 128, d192 4-layer Llama
    .venv/bin/python bench/train_step.py --batch 8 --steps 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alignx.model.alignx_model import AlignXModel, CausalLMObjective, position_ids_from_mask  # noqa: E402
from alignx.model.losses import LanguageMatchingHead, language_matching_loss  # noqa: E402

VARIANTS = ("plain", "alignx", "alignx_hooks")
LAM_VARIANTS = ("lam_naive", "lam_ours")


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_model(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                         num_attention_heads=4, num_key_value_heads=4, intermediate_size=args.hidden * 8 // 3,
                         max_position_embeddings=max(512, args.seq), tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def synthetic_batch(args) -> dict[str, torch.Tensor]:
    """Translation-shaped rows: a prompt, a source span, a target span, EOS (right-aligned, left padding)."""
    gen = torch.Generator().manual_seed(1)
    b, t = args.batch, args.seq
    ids = torch.randint(5, args.vocab, (b, t), generator=gen)
    attention = torch.ones(b, t, dtype=torch.long)
    pads = torch.randint(0, t // 4, (b,), generator=gen)
    for row, p in enumerate(pads.tolist()):
        attention[row, :p] = 0
    start = pads + (t - pads) // 3  # prompt ~ a third, then source, then target
    mid = pads + 2 * (t - pads) // 3
    return {"input_ids": ids, "attention_mask": attention, "labels": ids.masked_fill(attention == 0, -100),
            "src_span": torch.stack([start, mid - 8], 1), "tgt_span": torch.stack([mid, torch.full_like(mid, t - 1)], 1),
            "span_ok": torch.ones(b, dtype=torch.bool), "src_lang": torch.randint(1, 10, (b,), generator=gen),
            "tgt_lang": torch.zeros(b, dtype=torch.long)}


class HookedAlignX(AlignXModel):
    """The same loss with the two layers read through forward hooks instead of output_hidden_states."""

    def forward(self, batch):
        captured = {}
        layer = self.lm.get_decoder().layers[self.align_layer - 1]
        h1 = layer.register_forward_hook(lambda m, i, o: captured.__setitem__("align", o[0] if isinstance(o, tuple) else o))
        h2 = self.lm.get_output_embeddings().register_forward_pre_hook(lambda m, a: captured.__setitem__("final", a[0]))
        try:
            out = self.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          position_ids=position_ids_from_mask(batch["attention_mask"]), use_cache=False)
        finally:
            h1.remove()
            h2.remove()
        return self.losses_from_states(out.logits, captured["align"], captured["final"], batch)


def build_variant(args, variant: str):
    lm = build_model(args)
    if variant == "plain":
        model = CausalLMObjective(lm)
    else:
        cls = HookedAlignX if variant == "alignx_hooks" else AlignXModel
        model = cls(lm, align_layer=args.layers // 2, lam_width=128)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    for p in model.parameters():  # materialise the optimizer state before the baseline reading
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return model, opt


def train_step(model, opt, batch) -> float:
    t0 = time.perf_counter()
    out = model(batch)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def run_variant(args) -> dict:
    """Peak memory of one variant (this process runs nothing else)."""
    torch.set_num_threads(args.threads)
    model, opt = build_variant(args, args.variant)
    batch = synthetic_batch(args)
    base = rss_mb()
    for _ in range(args.warmup + 2):
        train_step(model, opt, batch)
    return {"peak_mb": peak_mb(), "step_mb": peak_mb() - base}


def run_timing(args) -> dict:
    """Step times of all variants, interleaved step by step so a shared machine's load hits all alike."""
    torch.set_num_threads(args.threads)
    built = {v: build_variant(args, v) for v in VARIANTS}
    batch = synthetic_batch(args)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for step in range(args.warmup + args.steps):
        for v in VARIANTS:
            t = train_step(*built[v], batch)
            if step >= args.warmup:
                times[v].append(t)
    return {v: {"step_s": statistics.median(ts), "min_s": min(ts)} for v, ts in times.items()}


def naive_language_matching(head: LanguageMatchingHead, vectors, langs):
    """The [2B, 2B, 2d] concatenation, as the reference writes it."""
    n = vectors.size(0)
    pairs = torch.cat([vectors.unsqueeze(1).expand(n, n, -1), vectors.unsqueeze(0).expand(n, n, -1)], -1)
    logits = head.down(F.silu(head.gate(pairs)) * head.up(pairs))
    return F.cross_entropy(logits.reshape(-1, 2), (langs.unsqueeze(1) == langs.unsqueeze(0)).long().reshape(-1))


def run_lam(args) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    head = LanguageMatchingHead(args.hidden, 128)
    vectors = torch.randn(2 * args.batch, args.hidden, requires_grad=True)
    langs = torch.randint(0, 10, (2 * args.batch,))
    fn = naive_language_matching if args.variant == "lam_naive" else language_matching_loss
    base = rss_mb()
    times = []
    for step in range(args.warmup + 5 * args.steps):
        t0 = time.perf_counter()
        fn(head, vectors, langs).backward()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    return {"step_s": statistics.median(times), "peak_mb": peak_mb(), "step_mb": peak_mb() - base}


def in_subprocess(args, variant: str, batch: int) -> dict:
    cmd = [sys.executable, __file__, "--variant", variant, "--batch", str(batch)]
    for name in ("seq", "hidden", "layers", "vocab", "steps", "warmup", "threads"):
        cmd += [f"--{name}", str(getattr(args, name))]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lam-batch", type=int, default=64)
    p.add_argument("--variant", choices=(*VARIANTS, *LAM_VARIANTS, "timing"))
    args = p.parse_args()
    if args.variant:
        run = {"timing": run_timing, **dict.fromkeys(LAM_VARIANTS, run_lam)}.get(args.variant, run_variant)
        print(json.dumps(run(args)))
        return
    timing = in_subprocess(args, "timing", args.batch)
    steps = {v: {**timing[v], **in_subprocess(args, v, args.batch)} for v in VARIANTS}
    lam = {str(b): {v: in_subprocess(args, f"lam_{v}", b) for v in ("naive", "ours")}
           for b in sorted({args.batch, args.lam_batch})}
    time_ratio = steps["alignx"]["step_s"] / steps["plain"]["step_s"]
    mem_ratio = steps["alignx"]["peak_mb"] / steps["plain"]["peak_mb"]
    ours_faster = lam[str(args.lam_batch)]["ours"]["step_s"] < lam[str(args.lam_batch)]["naive"]["step_s"]
    print(json.dumps({
        "device": "cpu", "threads": args.threads, "batch": args.batch, "seq": args.seq,
        "model": f"llama d{args.hidden} x{args.layers} vocab {args.vocab}",
        **steps, "lam": lam,
        "time_ratio": round(time_ratio, 3), "mem_ratio": round(mem_ratio, 3),
        "step_mem_ratio": round(steps["alignx"]["step_mb"] / max(steps["plain"]["step_mb"], 1e-9), 3),
        "hooks_vs_hidden_states_time": round(steps["alignx_hooks"]["step_s"] / steps["alignx"]["step_s"], 3),
        "targets": {"time_ratio<=1.10": time_ratio <= 1.10, "mem_ratio<=1.05": mem_ratio <= 1.05,
                    f"lam_ours_faster_at_batch_{args.lam_batch}": ours_faster},
    }))


if __name__ == "__main__":
    main()
