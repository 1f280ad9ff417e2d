"""One process of a launched stage (training or evaluation): ``python -m alignx.train.worker <call.json>``.

The launcher (``alignx.launch``) writes the call (stage, arguments, config) and reads this process's
stdout. Lines that start with ``@alignx`` are messages to it (progress, the result, a failure); every
other line is log text. Only the main process reports progress and the result.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from alignx.progress import Progress
from alignx.stages_and_arms import TRAINING_STAGES

PROTOCOL = "@alignx "
OOM_EXIT = 75  # the stage ran out of memory; the launcher may retry with activation checkpointing


# Allocation failures that do not arrive as torch.OutOfMemoryError: raised inside NCCL, cuBLAS or cuDNN
# (a RuntimeError or a DistBackendError carrying the library's status), or by the CPU allocator
_OOM_TEXT = re.compile(r"out of memory|CUBLAS_STATUS_ALLOC_FAILED|CUDNN_STATUS_ALLOC_FAILED|NCCL_STATUS_ALLOC|"
                       r"can't allocate memory|Cannot allocate memory|std::bad_alloc", re.IGNORECASE)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is an allocation failure."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or _OOM_TEXT.search(str(exc)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def emit(kind: str, payload: dict[str, Any]) -> None:
    """One message to the launcher, on one line (lines of two processes never interleave mid-line)."""
    sys.stdout.write(f"{PROTOCOL}{kind} {json.dumps(payload, default=str)}\n")
    sys.stdout.flush()


def die_with_parent() -> None:
    """Linux: this process is killed when its parent (torchrun's agent) dies, however it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# Each stage's library module, imported by name: a stage's cache key covers the import closure of its
# own entry (alignx.code_closure), so training code never keys an evaluation, nor evaluation code a training.
STAGE_ENTRIES = {**dict.fromkeys(TRAINING_STAGES, "alignx.train.training_stages"),
                 "evaluate": "alignx.eval.runner"}


def run_stage(stage: str, args: dict[str, Any], cfg, progress: Progress | None = None):
    """Run one stage in this process: a training stage, or ``evaluate`` (``args``: paths as strings)."""
    if stage not in STAGE_ENTRIES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGE_ENTRIES)}")
    entry = importlib.import_module(STAGE_ENTRIES[stage])
    out = Path(args["out"])
    if stage == "bootstrap":
        return entry.bootstrap_base_model(Path(args["shards"]), cfg, out, progress=progress)
    if stage == "stage1":
        return entry.train_stage1(args["model"], Path(args["shards"]), cfg, out, control=bool(args.get("control")),
                                  progress=progress)
    if stage == "stage2":
        return entry.train_stage2(args["model"], Path(args["shards"]), cfg, out, progress=progress)
    return entry.evaluate_model(args["model"], cfg, out, progress=progress)


def main(call_file: str) -> int:
    die_with_parent()
    import torch

    from alignx.distributed_run import process_state
    from alignx.profiles import parse_config

    call = json.loads(Path(call_file).read_text(encoding="utf-8"))
    cfg = parse_config(call["config"], source=call_file)
    state = process_state(cfg.launch.timeout_minutes)  # the group is created here, with the configured timeout
    logging.basicConfig(level=logging.INFO if state.is_main_process else logging.WARNING, stream=sys.stdout,
                        format=f"[rank {state.process_index}] %(levelname)s %(name)s: %(message)s")

    def progress(done: int, total: int, detail: str | dict[str, float]) -> None:
        emit("progress", {"done": done, "total": total, "metrics": detail})

    try:
        artefact = run_stage(call["stage"], call["args"], cfg, progress if state.is_main_process else None)
    except Exception as exc:  # the launcher shows this line; the traceback goes to the log
        if isinstance(exc, torch.OutOfMemoryError) or is_out_of_memory(exc):
            traceback.print_exc(file=sys.stdout)
            emit("oom", {"rank": state.process_index, "message": (str(exc).splitlines() or ["out of memory"])[0]})
            return OOM_EXIT
        traceback.print_exc(file=sys.stdout)
        emit("error", {"rank": state.process_index, "type": type(exc).__name__, "message": str(exc)})
        return 1
    if state.is_main_process:
        emit("result", artefact.model_dump(mode="json"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
