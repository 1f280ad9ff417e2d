"""The filter step: a pair in, keep or (False, reason) out; the base class counts and keeps examples.

Like datatrove's filters, one method decides; ``prepare`` lets a filter do batch work first (language
ID, hashing) so the per-pair decision stays a lookup.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from alignx.data.langid import LOW_LID_SCORE, WRONG_LANGUAGE

if TYPE_CHECKING:
    from alignx.config import DataConfig
    from alignx.data.langid import LanguageIdentifier

# Rejection reasons, in the order the filters run.
CONTROL_CHARS = "control_chars"  # a side holds a C0 control character (tab excepted) or DEL
EMPTY = "empty"  # a side is empty or whitespace only
IDENTICAL = "identical"  # source equals target after normalisation
TOO_SHORT = "too_short"  # a side has fewer than min_chars characters
TOO_LONG = "too_long"  # a side has more than max_chars characters
LENGTH_RATIO = "length_ratio"  # length ratio too far from the language pair's median
DUPLICATE = "duplicate"  # the same pair (normalised) was seen before, in this or another source
REASONS = (CONTROL_CHARS, EMPTY, IDENTICAL, TOO_SHORT, TOO_LONG, LENGTH_RATIO, DUPLICATE, WRONG_LANGUAGE, LOW_LID_SCORE)
EXAMPLES_PER_REASON = 3  # rejected pairs kept per filter for the report

FilterResult = bool | tuple[bool, str]


@dataclass(slots=True)
class ParallelPair:
    """One sentence pair on its way through the filters (the columns of PAIR_SCHEMA)."""

    src_lang: str
    tgt_lang: str
    src_text: str
    tgt_text: str
    source: str
    pair_id: str = ""
    src_lid: float = math.nan
    tgt_lid: float = math.nan
    row: int = 0  # 1-based row in its source's raw file of the language pair (= the reader's row); 0: unknown


@dataclass
class FilterContext:
    """What filters are built from: the data config, the shared language identifier, and the
    median length ratio of the language pair being filtered (None when too few pairs)."""

    cfg: DataConfig
    identifier: LanguageIdentifier
    median_ratio: float | None = None


@dataclass
class FilterStats:
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, list[dict]] = field(default_factory=dict)


class Filter(ABC):
    """One filter: ``filter(pair)`` returns True to keep, or ``(False, reason)`` to drop."""

    name: ClassVar[str]
    reason: ClassVar[str]  # the default reason when ``filter`` returns plain False

    def __init__(self) -> None:
        self.stats = FilterStats()

    @classmethod
    def from_context(cls, ctx: FilterContext) -> Filter | None:
        """Build the filter for one language pair; None turns it off."""
        return cls()

    def prepare(self, batch: list[ParallelPair]) -> None:
        """Batch work before the per-pair decisions; the default has none."""

    @abstractmethod
    def filter(self, pair: ParallelPair) -> FilterResult:
        """Keep (True) or drop ((False, reason)) one pair."""

    def apply(self, batch: list[ParallelPair]) -> list[ParallelPair]:
        """The pairs of ``batch`` this filter keeps, in order; drops are counted by reason."""
        self.prepare(batch)
        kept = []
        for pair in batch:
            result = self.filter(pair)
            if result is True:
                kept.append(pair)
                continue
            reason = result[1] if isinstance(result, tuple) else self.reason
            self.stats.dropped[reason] += 1
            examples = self.stats.examples.setdefault(reason, [])
            if len(examples) < EXAMPLES_PER_REASON:
                examples.append({"src": pair.src_text, "tgt": pair.tgt_text, "source": pair.source})
        self.stats.kept += len(kept)
        return kept
