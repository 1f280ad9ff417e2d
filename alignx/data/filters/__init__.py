"""Pair filters, one small class per file; this registry fixes their order.

Cheap checks first (control characters first of all: in ``fail`` mode each one stops the stage,
whatever else is wrong with its pair), dedup before language ID (no LID work on copies), the LID
score last because it reads the scores language ID wrote. A new filter is one new file plus one line here.
"""

from __future__ import annotations

from alignx.data.filters.base import (
    CONTROL_CHARS,
    DUPLICATE,
    EMPTY,
    IDENTICAL,
    LENGTH_RATIO,
    LOW_LID_SCORE,
    REASONS,
    TOO_LONG,
    TOO_SHORT,
    WRONG_LANGUAGE,
    Filter,
    FilterContext,
    ParallelPair,
)
from alignx.data.filters.control import ControlCharError, ControlCharFilter
from alignx.data.filters.duplicates import DuplicateFilter
from alignx.data.filters.empty import EmptyFilter
from alignx.data.filters.identical import IdenticalFilter
from alignx.data.filters.language import LanguageFilter, LidScoreFilter
from alignx.data.filters.length import LengthFilter
from alignx.data.filters.ratio import LengthRatioFilter, RatioHistogram

FILTERS: dict[str, type[Filter]] = {
    f.name: f
    for f in (ControlCharFilter, EmptyFilter, IdenticalFilter, LengthFilter, LengthRatioFilter, DuplicateFilter,
              LanguageFilter, LidScoreFilter)
}


def build_filters(ctx: FilterContext, names: list[str] | None = None) -> list[Filter]:
    """The filters (all, or the named ones) in registry order, built for one language pair."""
    unknown = sorted(set(names or []) - set(FILTERS))
    if unknown:
        raise ValueError(f"unknown filter(s) {', '.join(unknown)}; known filters: {', '.join(FILTERS)}")
    chosen = [cls.from_context(ctx) for name, cls in FILTERS.items() if names is None or name in names]
    return [f for f in chosen if f is not None]


def run_filters(filters: list[Filter], batch: list[ParallelPair]) -> list[ParallelPair]:
    """Pass one batch through the filters in order; each sees only what the previous ones kept."""
    for f in filters:
        if not batch:
            break
        batch = f.apply(batch)
    return batch


__all__ = [
    "CONTROL_CHARS", "DUPLICATE", "EMPTY", "FILTERS", "IDENTICAL", "LENGTH_RATIO", "LOW_LID_SCORE", "REASONS",
    "TOO_LONG", "TOO_SHORT", "WRONG_LANGUAGE", "ControlCharError", "ControlCharFilter", "DuplicateFilter",
    "EmptyFilter", "Filter", "FilterContext", "IdenticalFilter", "LanguageFilter", "LengthFilter", "LengthRatioFilter",
    "LidScoreFilter", "ParallelPair", "RatioHistogram", "build_filters", "run_filters",
]
