"""Language ID filters: the wrong language on either side, and a too-low LID score.

LID runs once per batch and per side (``prepare``), the decisions are lookups. Per-language counts
(sentences judged, accepted, the labels of the rejected ones) feed the report's retention and warnings.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from alignx.data.filters.base import Filter, FilterContext, FilterResult, ParallelPair
from alignx.data.langid import LOW_LID_SCORE, WRONG_LANGUAGE, LanguageIdentifier


@dataclass
class LanguageStats:
    """LID outcome for the sentences declared in one language."""

    judged: int = 0
    accepted: int = 0
    mislabels: Counter = field(default_factory=Counter)  # top-1 label of rejected sentences


class LanguageFilter(Filter):
    name = "language"
    reason = WRONG_LANGUAGE

    def __init__(self, identifier: LanguageIdentifier):
        super().__init__()
        self.identifier = identifier
        self.languages: dict[str, LanguageStats] = {}
        self._wrong: dict[int, bool] = {}

    @classmethod
    def from_context(cls, ctx: FilterContext) -> LanguageFilter:
        return cls(ctx.identifier)

    def prepare(self, batch: list[ParallelPair]) -> None:
        groups: dict[tuple[str, str], list[ParallelPair]] = defaultdict(list)
        for p in batch:
            groups[(p.src_lang, p.tgt_lang)].append(p)
        self._wrong = {}
        for (src, tgt), pairs in groups.items():
            s_scores, s_reasons = self._judge([p.src_text for p in pairs], src)
            t_scores, t_reasons = self._judge([p.tgt_text for p in pairs], tgt)
            for p, ss, sr, ts, tr in zip(pairs, s_scores, s_reasons, t_scores, t_reasons):
                p.src_lid, p.tgt_lid = ss, ts
                self._wrong[id(p)] = sr == WRONG_LANGUAGE or tr == WRONG_LANGUAGE

    def _judge(self, texts: list[str], lang: str) -> tuple[list[float], list[str | None]]:
        scores, reasons, tops = self.identifier.judge(texts, lang)
        if self.identifier.policy(lang).enabled:
            stats = self.languages.setdefault(lang, LanguageStats())
            stats.judged += len(texts)
            stats.accepted += reasons.count(None)
            stats.mislabels.update(top for top, r in zip(tops, reasons) if r is not None)
        return scores, reasons

    def filter(self, pair: ParallelPair) -> FilterResult:
        return (False, WRONG_LANGUAGE) if self._wrong[id(pair)] else True


class LidScoreFilter(Filter):
    """Drops pairs whose accepted label scored below the language's ``min_score`` (NaN: LID off)."""

    name = "lid_score"
    reason = LOW_LID_SCORE

    def __init__(self, identifier: LanguageIdentifier):
        super().__init__()
        self.identifier = identifier
        self._floor: dict[str, float] = {}

    @classmethod
    def from_context(cls, ctx: FilterContext) -> LidScoreFilter | None:
        langid = ctx.cfg.langid
        if langid.default.min_score == 0 and all(p.min_score == 0 for p in langid.policies.values()):
            return None  # no floor anywhere: nothing to check
        return cls(ctx.identifier)

    def _low(self, score: float, lang: str) -> bool:
        if lang not in self._floor:
            self._floor[lang] = self.identifier.policy(lang).min_score
        return score < self._floor[lang]  # NaN (LID off) compares False

    def filter(self, pair: ParallelPair) -> FilterResult:
        if self._low(pair.src_lid, pair.src_lang) or self._low(pair.tgt_lid, pair.tgt_lang):
            return False, LOW_LID_SCORE
        return True
