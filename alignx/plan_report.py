"""The text of ``alignx plan`` and the plain tables the command line prints.

Renders ``memory_plan.plan`` for one profile: the per-GPU figures of every training stage under each
strategy, host memory for the configured ones, and what syncing gradients every micro-batch would save.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from alignx.config import PipelineConfig
from alignx.memory_plan import RESERVED_FRACTION, estimate, host_bytes, plan, usable_bytes


def text_table(rows: list[dict[str, Any]]) -> str:
    """Rows of dicts as aligned text columns, in the order the keys first appear."""
    if not rows:
        return "(no rows)"
    cols = list(dict.fromkeys(k for row in rows for k in row))
    widths = {c: max(len(str(c)), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    line = "  ".join(str(c).ljust(widths[c]) for c in cols)
    body = ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join([line, "-" * len(line), *body])


def gib(n: int) -> str:
    return f"{n / 2**30:.1f}" if n >= 2**30 else f"{n / 2**30:.2g}"


def print_plan(cfg: PipelineConfig, gpus: int, gpu_memory: float, out: TextIO | None = None,
               err: TextIO | None = None) -> int:
    """Print the plan (to ``out`` and ``err``, by default the streams of the moment); 0 when each stage's
    configured strategy fits, 1 when one does not. Raises ``BaseModelError`` or ``ValueError`` when the
    model has no shape or lacks the LoRA targets."""
    out, err = out or sys.stdout, err or sys.stderr
    rows = plan(cfg, gpus, gpu_memory)
    usable = usable_bytes(gpu_memory)
    shape = next(r.shape for r in rows if r.stage != "bootstrap")
    print(f"model {shape.name}: {shape.params:,} parameters ({shape.layers} layers, hidden {shape.hidden}, "
          f"{shape.heads}/{shape.kv_heads} heads, vocab {shape.vocab:,}, {'tied' if shape.tied else 'untied'})",
          file=out)
    print(f"per-GPU GiB on {gpus} GPU(s) of {gpu_memory:g} GiB, {RESERVED_FRACTION:.0%} reserved for the "
          f"CUDA context, NCCL buffers and fragmentation: {gib(usable)} GiB usable", file=out)
    table = []
    for r in rows:
        e, ckpt = r.estimate, r.with_checkpointing
        table.append({"stage": r.stage, "strategy": r.strategy + ("*" if r.configured else ""),
                      "params": gib(e.params), "grads": gib(e.grads), "optimizer": gib(e.optimizer),
                      "activations": gib(e.activations), "total": gib(e.total),
                      "fits": "yes" if r.fits else "no",
                      "with gradient_checkpointing": "-" if ckpt is None else
                      f"{gib(ckpt.total)} ({'fits' if ckpt.total <= usable else 'no'})"})
    print(text_table(table), file=out)
    print("* the stage's configured strategy (train.lora; train.sharding with more than one GPU; else ddp)", file=out)
    for strategy in sorted({r.strategy for r in rows if r.configured and r.stage != "bootstrap"}):
        host = host_bytes(shape, strategy, gpus)
        how = {"fsdp": "the main process reads the one float32 copy", "lora": "a bf16 base per process",
               "ddp": "a float32 copy per process"}[strategy if strategy != "fsdp" or gpus > 1 else "ddp"]
        final = {"fsdp": "the gathered weights", "lora": "the float32 base the adapters merge into"}.get(strategy)
        print(f"host memory under {strategy} on {gpus} GPU(s): {gib(host['load'])} GiB while loading ({how})"
              + (f", {gib(host['final'])} GiB for the final write ({final})" if host["final"] else ""), file=out)
    failing = [f"{r.stage} ({r.strategy})" for r in rows if r.configured and not r.fits]
    for r in rows:  # FSDP that keeps unsharded fp32 gradients between micro-batches: say what syncing saves
        train = getattr(cfg, r.stage).train
        if r.configured and not r.fits and r.strategy == "fsdp" and train.grad_sync == "step":
            synced = estimate(r.shape, train.model_copy(update={"grad_sync": "micro_batch"}), "fsdp", gpus,
                              "cuda", stage1_head_width=cfg.stage1.lam_width if r.stage == "stage1" else None)
            if synced.total < r.estimate.total:
                print(f"{r.stage}: with {r.stage}.train.grad_sync=micro_batch (gradients reduce-scattered after "
                      f"each micro-batch, never kept whole) it needs {gib(synced.total)} GiB per GPU"
                      f" ({'fits' if synced.total <= usable else 'still over'})", file=out)
    if failing:
        print(f"does not fit as configured: {', '.join(failing)}", file=err)
        return 1
    print("every training stage fits as configured", file=out)
    return 0
