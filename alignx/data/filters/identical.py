"""Drop pairs whose two sides are the same text (untranslated copies), compared normalised."""

from __future__ import annotations

from alignx.data.filters.base import IDENTICAL, Filter, FilterResult, ParallelPair
from alignx.data.schema import normalise_text


class IdenticalFilter(Filter):
    name = "identical"
    reason = IDENTICAL

    def filter(self, pair: ParallelPair) -> FilterResult:
        if pair.src_text == pair.tgt_text or normalise_text(pair.src_text) == normalise_text(pair.tgt_text):
            return False, IDENTICAL
        return True
