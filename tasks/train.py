"""Prefect tasks for training: the base model (prepared or bootstrapped), stage 1 (AlignX or control), stage 2 (SFT).

Tagged ``gpu`` so a concurrency limit keeps one training stage per GPU worker. A retried task resumes
from the last training checkpoint (the library keeps it beside the output directory).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prefect import task
from prefect.logging import get_run_logger

from alignx.artefacts import Artefact
from alignx.config import PipelineConfig
from alignx.model import base_models
from tasks.caching import output_key, stage_cache
from tasks.retries import TRAIN_RETRY
from tasks.stage_progress import ProgressReporter, run_observed, stage1_run_name

# launch: the number of processes fixes the global batch when train.global_batch_size is not set
STAGE2_SECTIONS = ["stage2", "languages", "pivot", "stage1.align_layer", "launch"]  # stage2.general: by file content too


def _with_oom_fallback(run: Callable[[PipelineConfig], Artefact], cfg: PipelineConfig, section: str) -> Artefact:
    """Run; on out-of-memory, retry once with gradient checkpointing (never a smaller micro-batch).

    A launched stage's out-of-memory (``alignx.launch.OutOfMemoryError``) retries as a new process group.

    The retry starts only after the failed attempt is gone: its exception's traceback holds the frames
    that hold its model, optimizer and activations, so it is dropped and collected (and the CUDA cache
    emptied) first, or the second attempt would run out of memory beside the first one's leftovers.
    """
    try:
        return run(cfg)
    except Exception as exc:
        if type(exc).__name__ != "OutOfMemoryError":
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if getattr(cfg, section).train.gradient_checkpointing:  # nothing left to fall back on: not transient
            raise StageOutOfMemory(out_of_memory_answer(cfg, section, message)) from None
    release_memory()
    get_run_logger().warning("%s ran out of memory (%s); retrying with gradient checkpointing", section, message)
    checkpointed = cfg.model_copy(update={section: getattr(cfg, section).model_copy(
        update={"train": getattr(cfg, section).train.model_copy(update={"gradient_checkpointing": True})})})
    try:
        return run(checkpointed)
    except Exception as exc:
        if type(exc).__name__ != "OutOfMemoryError":
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    release_memory()
    raise StageOutOfMemory(out_of_memory_answer(checkpointed, section, message))


class StageOutOfMemory(RuntimeError):
    """A stage out of memory with activation checkpointing on: the same run again would fail the same way,
    so it is not retried; the message gives the plan's figures and what to change."""


def out_of_memory_answer(cfg: PipelineConfig, section: str, message: str) -> str:
    """What failed, the memory plan's figures for this stage on these GPUs, and the changes that fit."""
    from alignx.memory_plan import plan, usable_bytes

    train = getattr(cfg, section).train
    answer = (f"{section} ran out of memory with activation checkpointing on ({message}); retrying the same "
              "run cannot fit")
    try:
        import torch

        if torch.cuda.is_available():
            gpus = torch.cuda.device_count()
            gib = torch.cuda.get_device_properties(0).total_memory / 2**30
            rows = [r for r in plan(cfg, gpus, gib) if r.stage == section and r.configured]
            if rows:
                est = rows[0].with_checkpointing or rows[0].estimate
                answer += (f". The plan: {rows[0].strategy} on {gpus} GPU(s) of {gib:.0f} GiB needs "
                           f"{est.total / 2**30:.1f} GiB per GPU of {usable_bytes(gib) / 2**30:.1f} usable "
                           f"(alignx plan --profile {cfg.name} --gpus {gpus} --gpu-memory {gib:.0f})")
    except Exception as exc:  # no shape for this model: the advice still holds
        answer += f" (no memory plan: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    return (answer + f". To fit: more GPUs (launch.processes, with {section}.train.sharding: fsdp), "
            f"{section}.train.lora, or a smaller {section}.train.micro_batch_size (now {train.micro_batch_size}) "
            f"with {section}.train.global_batch_size set to keep the global batch"
            + (f", or {section}.train.grad_sync: micro_batch (no whole fp32 gradients between micro-batches)"
               if train.sharding == "fsdp" and train.grad_sync == "step" else ""))


def release_memory() -> None:
    """Collect what a failed attempt left (its frames are unreachable once its exception is dropped)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def model_dir(cfg: PipelineConfig, name: str) -> Path:
    """The running task's output folder: ``models/<name>-<its cache key>``."""
    return cfg.resolved_run_root() / "models" / f"{name}-{output_key()}"


@task(name="prepare-base", cache_policy=stage_cache(["base_model", "base_model_dtype"]),
      persist_result=True, **TRAIN_RETRY)
def prepare_base(source_fp: str, cfg: PipelineConfig) -> Artefact:
    """The profile's base model as a checkpoint dir (a GGUF is converted once); keyed on ``source_fp``.

    ``source_fp`` (``base_models.base_model_fingerprint``) is the GGUF's SHA-256, the directory's content
    fingerprint or the hub commit, so a changed file is a cache miss even under the same path or name.
    """
    return base_models.prepare_base_model(cfg.base_model, cfg.resolved_run_root() / "models",
                                          dtype=cfg.base_model_dtype,
                                          progress=ProgressReporter("base-model", "base model"))


# Bootstrap checks stage1.align_layer against the model it builds and records it for later stages;
# stage 2 records it too when its input model has none (a given base model): both are keyed on it.
@task(name="bootstrap", cache_policy=stage_cache(["bootstrap", "languages", "pivot", "stage1.align_layer", "launch"],
                                                 "bootstrap"),
      persist_result=True, tags=["gpu"], **TRAIN_RETRY)
def bootstrap(shards: Artefact, cfg: PipelineConfig) -> Artefact:
    """Train the offline base model (SentencePiece tokenizer + small Llama) on the train shards."""
    out = model_dir(cfg, "base")
    return _with_oom_fallback(
        lambda c: run_observed("bootstrap", {"shards": shards.path, "out": out}, c,
                             ProgressReporter("bootstrap", "bootstrap pretraining")),
        cfg, "bootstrap")


@task(name="stage1", task_run_name=stage1_run_name,
      cache_policy=stage_cache(["stage1", "languages", "pivot", "launch"], "stage1"),
      persist_result=True, tags=["gpu"], **TRAIN_RETRY)
def stage1(base: Artefact, shards: Artefact, cfg: PipelineConfig, control: bool = False) -> Artefact:
    """Stage-1 alignment pre-training; ``control`` trains the same steps with both lambdas at 0."""
    arm = "control" if control else "alignx"
    out = model_dir(cfg, f"{arm}-stage1")
    return _with_oom_fallback(
        lambda c: run_observed("stage1", {"model": base.path, "shards": shards.path, "out": out, "control": control}, c,
                             ProgressReporter(f"stage1-{arm}", f"stage 1 ({arm})")),
        cfg, "stage1")


@task(name="stage2", task_run_name="stage2-{arm}", cache_policy=stage_cache(STAGE2_SECTIONS, "stage2"),
      persist_result=True, tags=["gpu"], **TRAIN_RETRY)
def stage2(model: Artefact, shards: Artefact, cfg: PipelineConfig, arm: str) -> Artefact:
    """Stage-2 instruction fine-tuning from ``model`` (the stage-1 checkpoint, or base for SFT-only)."""
    out = model_dir(cfg, f"{arm}-stage2")  # keyed like the cache: a changed instruction file, a new model
    return _with_oom_fallback(
        lambda c: run_observed("stage2", {"model": model.path, "shards": shards.path, "out": out}, c,
                             ProgressReporter(f"stage2-{arm}", f"stage 2 ({arm})")),
        cfg, "stage2")
