"""Drop pairs with an empty or whitespace-only side."""

from __future__ import annotations

from alignx.data.filters.base import EMPTY, Filter, FilterResult, ParallelPair


class EmptyFilter(Filter):
    name = "empty"
    reason = EMPTY

    def filter(self, pair: ParallelPair) -> FilterResult:
        if not pair.src_text.strip() or not pair.tgt_text.strip():
            return False, EMPTY
        return True
