"""Data-parallel evaluation: every process runs the same evaluation; the model calls are split.

Under a launched process group (``alignx.launch``, ``eval.device: cuda`` with several GPUs), each of
the three places where evaluation spends its time (log-likelihood scoring, greedy generation, pooled
hidden states) computes its share of the items and gathers everyone's results in the original order,
so every process continues with the whole list and the metrics come out the same everywhere; the
main process writes them. In one process nothing changes (the lm-eval parity path).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from alignx.distributed_run import process_state

R = TypeVar("R")


def split_gather(n: int, compute: Callable[[list[int]], Sequence[R]], owner: Sequence[int] | None = None,
                 progress: Callable[[int], None] | None = None) -> list[R]:
    """``compute`` over indices 0..n-1, split between the processes; every process gets all n results.

    ``owner[i]`` keeps items together (e.g. requests that share a context): items with the same owner
    value go to the same process. ``compute(indices)`` returns one result per index, in that order
    (and reports its own items to ``progress``); the other processes' items are reported once gathered.
    """
    state = process_state()
    rank, size = state.process_index, state.num_processes
    if size == 1:
        return list(compute(list(range(n))))
    import torch.distributed as dist

    mine = [i for i in range(n) if (owner[i] if owner is not None else i) % size == rank]
    results = list(compute(mine)) if mine else []
    parts: list[list[tuple[int, R]] | None] = [None] * size
    dist.all_gather_object(parts, list(zip(mine, results)))
    out: list[R | None] = [None] * n
    for part in parts:
        for i, result in part or []:
            out[i] = result
    if progress is not None:
        progress(n - len(mine))
    missing = [i for i, r in enumerate(out) if r is None]
    if missing:
        raise RuntimeError(f"data-parallel evaluation lost items {missing[:5]} of {n}")
    return out  # type: ignore[return-value]
