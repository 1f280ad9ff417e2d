"""Paired bootstrap confidence intervals for differences between two models on the same items.

Both models are scored on the same items, so each resample draws item indices once and applies them
to both: the interval reflects item-to-item variation of the difference, not of each score alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_CHUNK = 2_000_000  # index draws per chunk (resamples x items), to keep memory flat for large sets


def _resampled_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``values`` over ``resamples`` bootstrap draws of its indices."""
    n = len(values)
    per_chunk = max(1, _CHUNK // max(n, 1))
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, per_chunk):
        stop = min(start + per_chunk, resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[idx].mean(axis=1)
    return means


def _as_pair(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores need two 1-d arrays of the same length; found shapes {a.shape} and {b.shape}")
    if len(a) == 0:
        raise ValueError("paired bootstrap needs at least one item")
    return a - b


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float, float]:
    """mean(a) - mean(b) over items with its percentile bootstrap interval: (diff, lo, hi).

    ``a[i]`` and ``b[i]`` are the two models' scores on item i (accuracy 0/1, segment chrF, ...).
    """
    diff = _as_pair(a, b)
    means = _resampled_means(diff, resamples, np.random.default_rng(seed))
    tail = (1.0 - confidence) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(diff.mean()), float(lo), float(hi)


def stratified_paired_bootstrap(
    groups: Sequence[tuple[Sequence[float], Sequence[float]]],
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """The average over groups (e.g. languages) of mean(a) - mean(b), with a bootstrap interval that
    resamples items within each group, so every group keeps its weight: (diff, lo, hi)."""
    if not groups:
        raise ValueError("stratified bootstrap needs at least one group")
    rng = np.random.default_rng(seed)
    diffs = [_as_pair(a, b) for a, b in groups]
    means = np.mean([_resampled_means(d, resamples, rng) for d in diffs], axis=0)
    tail = (1.0 - confidence) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(np.mean([d.mean() for d in diffs])), float(lo), float(hi)


def excludes_zero(lo: float, hi: float) -> bool:
    """Whether an interval lies entirely on one side of zero."""
    return lo > 0 or hi < 0
