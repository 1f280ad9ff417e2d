"""The one training loop, shared by bootstrap pre-training, stage 1 and stage 2.

A stage hands over an objective (an ``nn.Module`` whose forward maps a collated batch to
``LossParts``), its examples and a ``TrainConfig``; the loop does the rest, top to bottom: setup,
resume, step, log, checkpoint. Batches follow a fixed schedule (``micro_batch_schedule``), so a
resumed run takes up exactly where the checkpoint left it and every arm sees the same batches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from torch import nn
from tqdm.auto import tqdm

from alignx.artefacts import fingerprint
from alignx.config import TrainConfig
from alignx.data.collate import TrainExample, collate, micro_batch_schedule
from alignx.distributed_run import process_state
from alignx.model.losses import target_tokens
from alignx.progress import Progress
from alignx.train.checkpoint import truncate_log
from alignx.train.parallel_strategies import Replicated, Sharded
from alignx.tracking import curves
from alignx.training_records import TRAIN_LOG, read_log

log = logging.getLogger(__name__)

# Settings that change speed or bookkeeping but not the trajectory: a resumed run may differ in them
# (the out-of-memory retry turns gradient checkpointing on and resumes).
_NOT_TRAJECTORY = {"gradient_checkpointing", "checkpoint_every", "log_every", "grad_sync"}


@dataclass
class TrainResult:
    """What a finished run reports: steps, the mean loss parts of its last logged window, its log."""

    steps: int
    final: dict[str, float]
    log_path: Path
    resumed_from: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # the objective's weights gathered on the main process when they were sharded (else None: the
    # caller's modules hold them); see ``alignx.train.parallel_strategies.sub_state``
    full_state: dict[str, torch.Tensor] | None = None


def mixed_precision_mode(setting: str) -> str:
    """'auto' -> bf16 (or fp16) only when a CUDA GPU is present; CPU trains in float32."""
    if setting != "auto":
        return setting
    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def accumulation_steps(cfg: TrainConfig, num_processes: int) -> int:
    """Micro-batches per process per optimizer step: ``global_batch_size / (micro x world)``, else ``grad_accum``."""
    if cfg.global_batch_size is None:
        return cfg.grad_accum
    per_round = cfg.micro_batch_size * num_processes
    if cfg.global_batch_size % per_round:
        raise ValueError(f"global_batch_size={cfg.global_batch_size} is not a multiple of micro_batch_size "
                         f"{cfg.micro_batch_size} x {num_processes} process(es) = {per_round}: give a global batch "
                         f"that is, or change micro_batch_size")
    return cfg.global_batch_size // per_round


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """An ``Accelerator`` for one run, in the precision ``cfg`` asks for.

    accelerate keeps one precision per process and refuses a second; but one process often runs
    several stages (the local pipeline, a worker's flow run, a test session), each with its own
    setting. The precision part of the shared state is dropped before a run that wants another one;
    the process group (``PartialState``) stays, so distributed runs are unaffected.
    """
    mode = mixed_precision_mode(cfg.mixed_precision)
    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") != mode:
        AcceleratorState._reset_state(reset_partial_state=False)
    accum = accumulation_steps(cfg, process_state().num_processes)
    return Accelerator(gradient_accumulation_steps=accum, mixed_precision=mode,
                       cpu=not torch.cuda.is_available())


def total_steps(cfg: TrainConfig, n_examples: int, num_processes: int = 1) -> int:
    """Optimizer steps of the run: ``cfg.steps``, or the epochs' worth of micro-batches."""
    if cfg.steps is not None:
        return cfg.steps
    per_epoch = math.ceil(n_examples / cfg.micro_batch_size)
    return max(1, math.ceil(cfg.epochs * per_epoch / (accumulation_steps(cfg, num_processes) * num_processes)))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps: int):
    """Linear warmup, then linear / cosine decay to 0 or a constant rate."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - cfg.warmup_steps) / max(1, steps - cfg.warmup_steps)
        if cfg.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return max(0.0, 1.0 - progress)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def set_activation_checkpointing(lm: nn.Module, on: bool) -> None:
    """Recompute activations in backward (less memory, about a third more time); transformers 5 name first."""
    kwargs = {"use_reentrant": False}
    if hasattr(lm, "activation_checkpointing_enable"):
        if on:
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            lm.activation_checkpointing_disable()
    elif on:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        lm.gradient_checkpointing_disable()


def batch_fingerprint(input_ids: torch.Tensor) -> str:
    """Short hash of a micro-batch's token ids: two runs saw the same batch iff these match."""
    return hashlib.blake2b(input_ids.cpu().numpy().tobytes(), digest_size=8).hexdigest()


def lm_denominator(batches: list[dict[str, torch.Tensor]], accelerator: Accelerator, micro_batches: int) -> torch.Tensor:
    """What each micro-batch divides its summed next-token loss by: the target tokens of the whole
    global batch (every process's micro-batches of this step) over the number of micro-batches.

    The strategies average the micro-batches' losses (over accumulation and over processes), so the
    step's gradient is the loss summed over the global batch's tokens divided by their count: the
    gradient of one batch of that size, whatever its split (1 process x 4 micro-batches, 2 x 2, 4 x 1),
    and a short micro-batch weighs no more than its tokens. One process with one micro-batch per step
    divides by its own count, the plain mean.
    """
    local = sum(int(target_tokens(b["labels"])) for b in batches)
    total = local
    if accelerator.num_processes > 1:
        total = int(accelerator.reduce(torch.tensor([local], dtype=torch.float64, device=accelerator.device),
                                       reduction="sum").item())
    return torch.tensor(max(total, 1) / micro_batches, dtype=torch.float32, device=accelerator.device)


def train(
    objective: nn.Module,
    examples: Sequence[TrainExample],
    pad_id: int,
    cfg: TrainConfig,
    work_dir: Path,
    *,
    run_key: str = "",
    progress: Progress | None = None,
    desc: str = "train",
    track: Callable[[int], Any] | None = None,
) -> TrainResult:
    """Train ``objective`` on ``examples`` following ``cfg``; checkpoints and log go to ``work_dir``.

    ``objective.lm`` is the underlying causal LM (gradient checkpointing is switched on there).
    ``run_key`` names what else fixes the trajectory (data, base model, stage settings): a checkpoint
    in ``work_dir`` is resumed only when it was written under the same key and training settings.
    ``track(start_step)`` opens the experiment tracker (``alignx.tracking``) the main process copies each
    logged row to.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    accelerator = make_accelerator(cfg)
    set_seed(cfg.seed + accelerator.process_index)  # each process its own dropout; the batches follow the schedule
    steps = total_steps(cfg, len(examples), accelerator.num_processes)
    accum, world = accumulation_steps(cfg, accelerator.num_processes), accelerator.num_processes
    # The global batch fixes the trajectory (each step takes the same micro-batches, split over the
    # processes): a checkpoint resumes on another world size at the same global batch, never at another.
    global_batch = cfg.micro_batch_size * accum * world
    key = fingerprint(run_key, cfg.model_dump(exclude=_NOT_TRAJECTORY | {"grad_accum", "global_batch_size"}),
                      len(examples), global_batch)
    # a memory-mapped example set (alignx.data.tokenised) gives its columns without building every example
    lengths = examples.lengths() if hasattr(examples, "lengths") else [len(ex.encoded.input_ids) for ex in examples]
    groups = examples.groups() if hasattr(examples, "groups") else [ex.group for ex in examples]
    n_micro = steps * accum * world
    schedule = micro_batch_schedule(lengths, cfg.micro_batch_size, n_micro, cfg.seed, cfg.group_by_length, groups)

    if cfg.gradient_checkpointing:
        set_activation_checkpointing(objective.lm, True)
    strategy = (Sharded(accelerator, mixed_precision_mode(cfg.mixed_precision), cfg.grad_sync) if cfg.sharding == "fsdp"
                else Replicated(accelerator))

    def make_optimizer(params: list[nn.Parameter]):
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        return optimizer, make_scheduler(optimizer, cfg, steps)

    optimizer, scheduler = strategy.setup(objective, make_optimizer)
    resumed = strategy.load(work_dir, key)
    start = resumed.step if resumed else 0
    # one log per process (only the main one's is the run's log), so processes never share a file
    log_path = work_dir / (TRAIN_LOG if accelerator.is_main_process else f"rank{accelerator.process_index}-{TRAIN_LOG}")
    if resumed:
        truncate_log(log_path, start)
    else:
        log_path.unlink(missing_ok=True)

    tracker = track(start) if track is not None and accelerator.is_main_process else None
    strategy.model.train()
    bar = tqdm(total=steps, initial=start, desc=desc, disable=None if accelerator.is_main_process else True)
    try:
        with log_path.open("a", encoding="utf-8") as log_file:
            for step in range(start, steps):
                started = time.perf_counter()
                parts: list[dict[str, float]] = []
                hashes: list[str] = []
                tokens = 0
                batches = [collate([examples[i] for i in schedule[(step * accum + micro) * world + accelerator.process_index]],
                                   pad_id, cfg.padding_side, cfg.mask_prompt) for micro in range(accum)]
                denominator = lm_denominator(batches, accelerator, accum * world)
                for micro, batch in enumerate(batches):
                    hashes.append(batch_fingerprint(batch["input_ids"]))
                    tokens += int(batch["attention_mask"].sum())
                    batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                    batch["lm_denominator"] = denominator
                    out = strategy.forward_backward(batch, last=micro == accum - 1, grad_clip=cfg.grad_clip)
                    parts.append(out.as_dict())
                lr = scheduler.get_last_lr()[0]
                scheduler.step()
                # the loss parts over the whole global batch (each process saw its own micro-batches)
                local = {"tokens": tokens, **{k: sum(p[k] for p in parts) / len(parts) for k in parts[0]}}
                if world > 1:
                    means = accelerator.reduce(torch.tensor(list(local.values()), dtype=torch.float64,
                                                            device=accelerator.device), reduction="mean")
                    local = dict(zip(local, means.tolist()))
                metrics = local
                tokens = round(metrics.pop("tokens") * world)  # the global batch's tokens (padding excluded)
                record = {"step": step + 1, "lr": lr, **metrics, "step_s": round(time.perf_counter() - started, 4),
                          "tokens": tokens, "batches": hashes}
                if strategy.grad_norm is not None:  # before clipping, over the whole model
                    record["grad_norm"] = strategy.grad_norm
                if accelerator.device.type == "cuda":  # this process's peak since the run started
                    record["max_memory_gib"] = round(torch.cuda.max_memory_allocated(accelerator.device) / 2**30, 3)
                else:
                    record["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                if tracker is not None:
                    tracker.log(step + 1, curves(record))
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items() if k != "usable"})
                if (step + 1) % cfg.log_every == 0:
                    log.info("%s step %d/%d %s", desc, step + 1, steps,
                             " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
                last = step + 1 == steps  # a sharded run checkpoints its last step before the gather, so a
                # group that fails while gathering or writing the weights resumes there instead of retraining
                if ((step + 1) % cfg.checkpoint_every == 0 and not last) or (last and strategy.checkpoints_last_step):
                    log_file.flush()
                    strategy.save(work_dir, key, step + 1)
                if progress is not None:
                    progress(step + 1, steps, metrics)
    except BaseException:
        if tracker is not None:  # the run shows as failed, with the curves up to the failure
            tracker.close(ok=False)
        raise
    bar.close()
    if tracker is not None:
        tracker.close()
    accelerator.wait_for_everyone()
    full_state = strategy.full_state()
    records = read_log(log_path)
    window = records[-min(cfg.log_every, len(records)):]
    final = {k: sum(r[k] for r in window) / len(window) for k in ("loss", "lm", "ctr", "lam")}
    if cfg.gradient_checkpointing:
        set_activation_checkpointing(objective.lm, False)
    accelerator.free_memory()
    return TrainResult(steps=steps, final=final, log_path=log_path, resumed_from=resumed.step if resumed else None,
                       full_state=full_state)
