"""From a benchmark's documents to per-item results and metrics, one function per kind of benchmark.

Every function returns ``(metrics, items)``: the task's metric values and one JSON-able row per item
(with ``doc_id``), so a report can pair two models item by item.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from alignx.eval.benchmarks import BenchmarkSpec, choice_item, generation_item
from alignx.eval.generation import GreedyGenerator, exact_match_number, final_number
from alignx.eval.loglik import LoglikelihoodScorer
from alignx.eval.translation import score_translations, translate

Metrics = dict[str, float | None]
Items = list[dict[str, Any]]


def evaluate_choice(
    spec: BenchmarkSpec, lang: str, docs: Sequence[dict], scorer: LoglikelihoodScorer,
    progress: Callable[[int], None] | None = None,
) -> tuple[Metrics, Items]:
    """acc and acc_norm of a multiple-choice benchmark (lm-eval's definitions, first index wins ties)."""
    built = [choice_item(spec, lang, doc) for doc in docs]
    requests = [req for item in built for req in item.requests]
    scores = scorer.score(requests, progress)
    items, pos = [], 0
    for doc_id, item in enumerate(built):
        lls = np.array([s for s, _ in scores[pos:pos + len(item.requests)]])
        pos += len(item.requests)
        lengths = np.array([float(len(c)) for c in item.choice_strings])
        pred, pred_norm = int(np.argmax(lls)), int(np.argmax(lls / lengths))
        items.append({
            "doc_id": doc_id, "gold": item.gold, "loglikelihoods": lls.tolist(),
            "pred": pred, "pred_norm": pred_norm,
            "acc": float(pred == item.gold), "acc_norm": float(pred_norm == item.gold),
        })
    return _means(items, spec.metrics), items


def evaluate_generation(
    spec: BenchmarkSpec, lang: str, docs: Sequence[dict], generator: GreedyGenerator,
    exemplars: Sequence[dict] = (), progress: Callable[[int], None] | None = None,
) -> tuple[Metrics, Items]:
    """Exact match of the final number (MGSM) from greedy generations."""
    built = [generation_item(spec, lang, doc, exemplars) for doc in docs]
    until = built[0].until if built else []
    outputs = generator.generate(generator.encode([b.prompt for b in built]), until, progress)
    items = [
        {"doc_id": i, "target": b.target, "output": out, "pred": final_number(out),
         "exact_match": float(exact_match_number(out, b.target))}
        for i, (b, out) in enumerate(zip(built, outputs))
    ]
    return _means(items, spec.metrics), items


def evaluate_translation(
    spec: BenchmarkSpec, src_lang: str, tgt_lang: str, sources: Sequence[str], references: Sequence[str],
    generator: GreedyGenerator, top_label: Callable[[str], str] | None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Metrics, Items]:
    """BLEU, chrF++, mean segment chrF++ and off-target rate of one translation direction."""
    hyps = translate(generator, src_lang, tgt_lang, sources, spec.until or ["\n"], progress)
    lid = None if tgt_lang in spec.no_lid else top_label
    result = score_translations(hyps, references, tgt_lang, lid)
    for row, src in zip(result.items, sources):
        row["source"] = src
    return {m: result.metrics.get(m) for m in spec.metrics}, result.items


def _means(items: Items, metrics: Sequence[str]) -> Metrics:
    return {m: float(np.mean([it[m] for it in items])) if items else None for m in metrics}
