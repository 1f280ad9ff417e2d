"""Drop pairs with a side shorter than ``min_chars`` or longer than ``max_chars`` characters."""

from __future__ import annotations

from alignx.data.filters.base import TOO_LONG, TOO_SHORT, Filter, FilterContext, FilterResult, ParallelPair


class LengthFilter(Filter):
    name = "length"
    reason = TOO_LONG

    def __init__(self, min_chars: int, max_chars: int):
        super().__init__()
        self.min_chars, self.max_chars = min_chars, max_chars

    @classmethod
    def from_context(cls, ctx: FilterContext) -> LengthFilter:
        return cls(ctx.cfg.filters.min_chars, ctx.cfg.filters.max_chars)

    def filter(self, pair: ParallelPair) -> FilterResult:
        a, b = len(pair.src_text.strip()), len(pair.tgt_text.strip())
        if a < self.min_chars or b < self.min_chars:
            return False, TOO_SHORT
        if a > self.max_chars or b > self.max_chars:
            return False, TOO_LONG
        return True
