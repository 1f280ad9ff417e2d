"""Resumable training state: model, optimizer, scheduler, RNG states and the data position.

One checkpoint directory per work dir, replaced atomically, so a crash leaves either the previous
checkpoint or the new one, never half of one. A checkpoint records the run key (a hash of what fixes
the trajectory); a checkpoint of another run is ignored rather than resumed.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignx.artefacts import atomic_dir, atomic_write_text, replace_dir
from alignx.distributed_run import process_state
from alignx.training_records import read_log

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.pt"


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from (dropout, sampling)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Resumed:
    """Where a resumed run continues: optimizer steps done (micro-batch position = step * accum)."""

    step: int


def frozen_names(model: torch.nn.Module) -> set[str]:
    """State-dict names of the parameters that do not train (a LoRA run's base, the control's head);
    tied names included, as the state dict lists them."""
    return {name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}


def trained_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict without its frozen parameters: they are rebuilt as they were (from the
    base model and the seed) by the run that resumes, so a LoRA checkpoint holds its adapters only."""
    frozen = frozen_names(model)
    return {k: v for k, v in model.state_dict().items() if k not in frozen}


def save_checkpoint(
    work_dir: Path, run_key: str, step: int, model: torch.nn.Module, optimizer, scheduler, scaler=None
) -> None:
    """Write the full training state for ``step`` (optimizer steps done), replacing the previous one.

    ``scaler``: fp16's gradient scaler, whose loss scale is part of the trajectory.
    """
    state = {
        "run_key": run_key,
        "step": step,
        "model": trained_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    with atomic_dir(Path(work_dir) / CHECKPOINT_DIR) as tmp:
        torch.save(state, tmp / STATE_FILE)
        (tmp / "meta.json").write_text(json.dumps({"run_key": run_key, "step": step}), encoding="utf-8")


def load_checkpoint(
    work_dir: Path, run_key: str, model: torch.nn.Module, optimizer, scheduler, scaler=None
) -> Resumed | None:
    """Restore the last checkpoint of this run into the given objects; None when there is none."""
    path = Path(work_dir) / CHECKPOINT_DIR / STATE_FILE
    if not path.is_file():
        return None
    # Our own file, written by save_checkpoint: it holds optimizer and RNG objects, not only tensors.
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("run_key") != run_key:
        log.warning("ignoring checkpoint %s: it belongs to another run (config, data or model differ)", path)
        return None
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    lacking = sorted(set(missing) - frozen_names(model))
    if lacking or unexpected:
        raise ValueError(f"{path}: checkpoint does not fit the model it resumes: trainable tensors missing "
                         f"{lacking[:5]}, tensors the model lacks {sorted(unexpected)[:5]}")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    log.info("resuming from %s at step %d", path, state["step"])
    return Resumed(step=int(state["step"]))


# ---------------------------------------------------------------- sharded (FSDP2) checkpoints
def save_sharded_checkpoint(work_dir: Path, run_key: str, step: int, model: torch.nn.Module, optimizer, scheduler) -> None:
    """Every process writes its shards (``torch.distributed.checkpoint``) into one temporary folder;
    the main one adds the run key, scheduler and RNG state and renames the folder into place.

    The temporary folder's name is the same on every process (they must agree without talking); a
    folder a killed run left under that name is cleared first, and the work dir is removed with the
    stage's success.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    work_dir = Path(work_dir)
    tmp = work_dir / f".{CHECKPOINT_DIR}.sharded-step{step}"
    state = process_state()
    model_state, optim_state = get_state_dict(model, optimizer)
    if state.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    state.wait_for_everyone()
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(tmp))
    torch.save(rng_state(), tmp / f"rng-rank{state.process_index}.pt")  # each process its own dropout stream
    state.wait_for_everyone()
    if state.is_main_process:
        torch.save({"run_key": run_key, "step": step, "scheduler": scheduler.state_dict(), "rng": rng_state()},
                   tmp / STATE_FILE)
        (tmp / "meta.json").write_text(json.dumps({"run_key": run_key, "step": step, "format": "dcp"}),
                                       encoding="utf-8")
        replace_dir(tmp, work_dir / CHECKPOINT_DIR)
    state.wait_for_everyone()


def load_sharded_checkpoint(work_dir: Path, run_key: str, model: torch.nn.Module, optimizer, scheduler) -> Resumed | None:
    """Restore a sharded checkpoint into this run's (possibly differently) sharded model and optimizer."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    folder = Path(work_dir) / CHECKPOINT_DIR
    path = folder / STATE_FILE
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)  # our own file (scheduler, RNG)
    if state.get("run_key") != run_key:
        log.warning("ignoring checkpoint %s: it belongs to another run (config, data or model differ)", folder)
        return None
    if not (folder / ".metadata").is_file():
        log.warning("ignoring checkpoint %s: it is not a sharded checkpoint (was the run started with sharding "
                    "'none'?)", folder)
        return None
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.load({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(folder))
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state)
    scheduler.load_state_dict(state["scheduler"])
    # this process's RNG streams; a resume on more processes than wrote the checkpoint starts the new
    # ones from the main process's (only dropout draws from them)
    own = folder / f"rng-rank{process_state().process_index}.pt"
    set_rng_state(torch.load(own, map_location="cpu", weights_only=False) if own.is_file() else state["rng"])
    log.info("resuming from %s at step %d (sharded)", folder, state["step"])
    return Resumed(step=int(state["step"]))


def truncate_log(log_path: Path, step: int) -> None:
    """Keep the training-log lines of steps up to ``step``: later ones belong to the lost trajectory."""
    if not log_path.exists():
        return
    kept = [row for row in read_log(log_path) if row["step"] <= step]
    atomic_write_text(log_path, "".join(json.dumps(row) + "\n" for row in kept))
