"""Paired bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest

from alignx.eval.stats import excludes_zero, paired_bootstrap, stratified_paired_bootstrap


def test_identical_arms_interval_contains_zero():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2, 300).astype(float)
    assert paired_bootstrap(a, a.copy(), 500, 0) == (0.0, 0.0, 0.0)
    b = rng.permutation(a)  # same accuracy, unrelated item by item
    diff, lo, hi = paired_bootstrap(a, b, 1000, 0)
    assert diff == pytest.approx(0.0) and lo < 0 < hi and not excludes_zero(lo, hi)


def test_right_where_the_other_is_wrong_is_far_from_zero():
    a, b = np.ones(100), np.zeros(100)
    assert paired_bootstrap(a, b, 500, 0) == (1.0, 1.0, 1.0)
    rng = np.random.default_rng(2)
    a = (rng.random(200) < 0.8).astype(float)
    b = (rng.random(200) < 0.3).astype(float)
    diff, lo, hi = paired_bootstrap(a, b, 1000, 0)
    assert lo > 0.3 and excludes_zero(lo, hi) and lo < diff < hi


def test_interval_is_deterministic_per_seed_and_covers_the_mean():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.1, 1, 150), rng.normal(0, 1, 150)
    first = paired_bootstrap(a, b, 800, 7)
    assert first == paired_bootstrap(a, b, 800, 7)
    assert first != paired_bootstrap(a, b, 800, 8)
    assert first[1] < first[0] < first[2]


def test_stratified_average_keeps_group_weights():
    groups = [(np.ones(10), np.zeros(10)), (np.zeros(1000), np.zeros(1000))]
    diff, lo, hi = stratified_paired_bootstrap(groups, 300, 0)
    assert diff == pytest.approx(0.5) and lo == pytest.approx(0.5) and hi == pytest.approx(0.5)


def test_unpaired_inputs_are_refused():
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap([1, 0, 1], [1, 0], 100, 0)
