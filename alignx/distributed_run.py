"""This process's place in a distributed run, and the one-writer rule for outputs written under it.

Training stages and evaluation run the same way in one process or in a launched group (``alignx.launch``):
every process computes, the main one writes the output directory, and the others wait for it and
return the artefact it wrote, so no two processes ever rename into the same place.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import PartialState

from alignx.artefacts import Artefact, read_marker


def process_state(timeout_minutes: float | None = None) -> PartialState:
    """This process's place in a distributed run (rank, world size), set up as the training loop does.

    On a machine without CUDA, accelerate forms a multi-process group only when asked for the CPU
    explicitly; a plain ``PartialState()`` created first would make every process rank 0 of 1.
    ``timeout_minutes``: how long a collective waits for the slowest process before the group fails
    (``launch.timeout_minutes``); only the first call, which creates the group, can set it.
    """
    if timeout_minutes is None:
        return PartialState(cpu=not torch.cuda.is_available())
    from datetime import timedelta

    return PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(minutes=timeout_minutes))


def written_once(out_dir: Path, write: Callable[[], object]) -> Artefact:
    """``write()`` (which writes ``out_dir`` and its marker) on the main process only; every process
    then waits and returns the marker it wrote."""
    state = process_state()
    if state.is_main_process:
        write()
    state.wait_for_everyone()
    artefact = read_marker(Path(out_dir))
    if artefact is None:
        raise RuntimeError(f"{out_dir}: the main process wrote no artefact marker")
    return artefact
