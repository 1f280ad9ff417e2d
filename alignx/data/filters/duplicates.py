"""Drop exact duplicates (normalised, via the pair id) within and across sources, in flat memory.

Only 8-byte hashes are kept, in sorted numpy runs merged like a log-structured tree: 8 bytes per
distinct pair instead of the ~70 of a Python set of ints, and no texts at all.
"""

from __future__ import annotations

import numpy as np

from alignx.data.filters.base import DUPLICATE, Filter, FilterContext, FilterResult, ParallelPair
from alignx.data.schema import pair_id


class HashSet64:
    """A growing set of uint64 hashes; ``add_batch`` reports which hashes are new."""

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(r) for r in self._runs)

    def add_batch(self, hashes: np.ndarray) -> np.ndarray:
        """Add hashes; True where a hash was not seen before (only its first occurrence in the batch)."""
        uniq, first = np.unique(hashes, return_index=True)
        new = np.ones(len(uniq), dtype=bool)
        for run in self._runs:
            idx = np.minimum(np.searchsorted(run, uniq), len(run) - 1)
            new &= run[idx] != uniq
        out = np.zeros(len(hashes), dtype=bool)
        out[first[new]] = True
        if new.any():
            self._runs.append(uniq[new])
            while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
                top = self._runs.pop()
                self._runs[-1] = np.union1d(self._runs[-1], top)
        return out


def pair_hashes(ids: list[str]) -> np.ndarray:
    """The first 8 bytes of each hexadecimal pair id, as uint64."""
    return np.frombuffer(bytes.fromhex("".join(i[:16] for i in ids)), dtype=">u8").astype(np.uint64)


class DuplicateFilter(Filter):
    name = "duplicate"
    reason = DUPLICATE

    def __init__(self) -> None:
        super().__init__()
        self.seen = HashSet64()
        self._new: dict[int, bool] = {}

    @classmethod
    def from_context(cls, ctx: FilterContext) -> DuplicateFilter | None:
        return cls() if ctx.cfg.filters.dedup else None

    def prepare(self, batch: list[ParallelPair]) -> None:
        for p in batch:
            if not p.pair_id:
                p.pair_id = pair_id(p.src_lang, p.tgt_lang, p.src_text, p.tgt_text)
        new = self.seen.add_batch(pair_hashes([p.pair_id for p in batch]))
        self._new = {id(p): bool(n) for p, n in zip(batch, new)}

    def filter(self, pair: ParallelPair) -> FilterResult:
        return True if self._new[id(pair)] else (False, DUPLICATE)
