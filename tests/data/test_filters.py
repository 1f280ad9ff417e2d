"""Each filter's rejection reason, the median-relative length ratio, flat-memory dedup, and the registry."""

from __future__ import annotations

import numpy as np
import pytest

from alignx.config import LangIdConfig
from alignx.profiles import parse_config
from alignx.data.filters import (
    DUPLICATE,
    EMPTY,
    FILTERS,
    IDENTICAL,
    LENGTH_RATIO,
    TOO_LONG,
    TOO_SHORT,
    DuplicateFilter,
    EmptyFilter,
    FilterContext,
    IdenticalFilter,
    LengthFilter,
    LengthRatioFilter,
    ParallelPair,
    RatioHistogram,
    build_filters,
    run_filters,
)
from alignx.data.filters.duplicates import HashSet64
from alignx.data.langid import LanguageIdentifier
from alignx.data.schema import pair_id


def pp(src: str, tgt: str, tgt_lang: str = "de") -> ParallelPair:
    return ParallelPair("en", tgt_lang, src, tgt, "test")


def reasons_of(f, pairs):
    kept = f.apply(pairs)
    return kept, dict(f.stats.dropped)


def test_empty_and_whitespace_sides_are_dropped():
    kept, dropped = reasons_of(EmptyFilter(), [pp("", "Hallo"), pp("Hi", " \t "), pp("Hi", "Hallo")])
    assert [p.tgt_text for p in kept] == ["Hallo"] and dropped == {EMPTY: 2}


def test_identical_sides_are_dropped_after_normalisation():
    pairs = [pp("Hello  World", "hello world"), pp("ＯＫ", "ok"), pp("Hello", "Hallo")]
    kept, dropped = reasons_of(IdenticalFilter(), pairs)
    assert [p.tgt_text for p in kept] == ["Hallo"] and dropped == {IDENTICAL: 2}


def test_length_bounds():
    f = LengthFilter(min_chars=3, max_chars=20)
    kept, dropped = reasons_of(f, [pp("Hi", "Hallo"), pp("Hello", "x" * 21), pp("Hello", "Hallo")])
    assert len(kept) == 1 and dropped == {TOO_SHORT: 1, TOO_LONG: 1}
    assert f.stats.kept == 1 and f.stats.examples[TOO_LONG][0]["tgt"] == "x" * 21


def test_ratio_is_judged_against_the_pairs_own_median(tatoeba_slices):
    rows = tatoeba_slices["zh"]
    hist = RatioHistogram(min_chars=1)
    hist.add(np.array([len(a) for a, _ in rows]), np.array([len(b) for _, b in rows]))
    median = hist.median()
    exact = float(np.median([len(a) / len(b) for a, b in rows]))
    assert median == pytest.approx(exact, rel=0.03) and median > 2.5  # English runs ~3x longer than Chinese
    # A fixed limit of 3 would drop a large share of clean en-zh pairs; relative to the median almost none.
    fixed = sum(1 for a, b in rows if max(len(a) / len(b), len(b) / len(a)) > 3) / len(rows)
    f = LengthRatioFilter(max_ratio=3.0, min_chars=1, median_ratio=median)
    kept = f.apply([pp(a, b, "zh") for a, b in rows])
    assert fixed > 0.3 and len(kept) / len(rows) > 0.97
    bad = pp("This is a much longer English sentence than its supposed translation.", "是的。", "zh")
    short_both = pp("Hi.", "嗨。", "zh")  # under min_chars: not judged
    _, dropped = reasons_of(LengthRatioFilter(3.0, 3, median), [bad, short_both])
    assert dropped == {LENGTH_RATIO: 1}
    assert RatioHistogram(1).median() is None and LengthRatioFilter(3.0, 1, None).filter(bad) is True


def test_duplicates_within_and_across_batches_via_normalised_pair_ids():
    f = DuplicateFilter()
    first = f.apply([pp("Hello world.", "Hallo Welt."), pp("hello   WORLD.", "Hallo Welt."), pp("A.", "B.")])
    second = f.apply([pp("Hello world.", "Hallo Welt."), pp("C.", "D.")])
    assert [p.src_text for p in first] == ["Hello world.", "A."] and [p.src_text for p in second] == ["C."]
    assert f.stats.dropped == {DUPLICATE: 2}
    assert first[0].pair_id == pair_id("en", "de", "Hello world.", "Hallo Welt.")
    # the same texts in another language pair are not duplicates (the id holds the languages)
    assert f.apply([pp("A.", "B.", "fr")]) != []


def test_hash_set_matches_a_python_set_and_keeps_8_bytes_per_hash():
    rng = np.random.default_rng(0)
    seen, hs = set(), HashSet64()
    for _ in range(40):
        batch = rng.integers(0, 5000, size=300, dtype=np.uint64)
        got = hs.add_batch(batch)
        want = []
        for h in batch.tolist():
            want.append(h not in seen)
            seen.add(h)
        assert got.tolist() == want
    assert len(hs) == len(seen)
    assert sum(r.nbytes for r in hs._runs) == 8 * len(seen)


def test_registry_order_and_unknown_names():
    assert list(FILTERS) == ["control_chars", "empty", "identical", "length", "length_ratio", "duplicate", "language",
                             "lid_score"]
    cfg = parse_config({"name": "t", "data": {"filters": {"dedup": False}}}).data
    ctx = FilterContext(cfg, LanguageIdentifier(LangIdConfig()), None)
    names = [f.name for f in build_filters(ctx)]
    assert names == ["control_chars", "empty", "identical", "length", "length_ratio", "language"]  # dedup off
    with pytest.raises(ValueError, match="unknown filter.*bogus.*known filters: control_chars, empty"):
        build_filters(ctx, ["bogus"])


def test_pipeline_gives_each_drop_one_reason_in_order():
    cfg = parse_config({"name": "t"}).data
    filters = build_filters(FilterContext(cfg, LanguageIdentifier(cfg.langid), None))
    pairs = [pp("", "Hallo"), pp("Same", "same"), pp("Where is the station?", "Wo ist der Bahnhof?"),
             pp("Where is the station?", "Wo ist der Bahnhof?"), pp("Where is the car?", "Où est la voiture ?")]
    kept = run_filters(filters, pairs)
    assert [p.tgt_text for p in kept] == ["Wo ist der Bahnhof?"]
    dropped = {r: n for f in filters for r, n in f.stats.dropped.items()}
    assert dropped == {"empty": 1, "identical": 1, "duplicate": 1, "wrong_language": 1}
