"""Filtering one language pair: its raw Parquet files (all sources) in, filtered Parquet and counts out.

A language pair is the unit of parallel work: dedup needs no state across pairs (the pair id holds
both languages), so pairs can go to separate processes and the output does not depend on how many.
Everything streams in batches of ``langid.batch_size`` rows; memory stays flat in the number of
pairs except for the dedup set's 8 bytes per distinct pair.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from alignx.config import DataConfig
from alignx.data.filters import (
    REASONS,
    FilterContext,
    LanguageFilter,
    ParallelPair,
    RatioHistogram,
    build_filters,
    run_filters,
)
from alignx.data.langid import LanguageIdentifier
from alignx.data.schema import PAIR_SCHEMA
from alignx.data.shards import read_parquet_batches

log = logging.getLogger(__name__)

_COLUMNS = ["pair_id", "src_text", "tgt_text"]  # the rest is constant within a raw file


@dataclass(frozen=True)
class FilterJob:
    """One language pair to filter: its raw files in source order, and where the kept pairs go."""

    pair: str  # "<src>-<tgt>"
    inputs: tuple[tuple[str, str], ...]  # (source name, raw Parquet path), catalogue order
    output: str
    cfg: DataConfig
    model_path: str


def rows_of(paths: list[str]) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def kept_rows(batch: pa.RecordBatch, pairs: list[ParallelPair], kept: list[ParallelPair]) -> pa.Table:
    """PAIR_SCHEMA rows of the kept pairs: texts and ids taken from the Arrow batch (no Python copies),
    languages and source from the pairs, LID scores as the language filter wrote them."""
    row = {id(p): i for i, p in enumerate(pairs)}
    taken = batch.take(pa.array([row[id(p)] for p in kept], type=pa.int64()))
    first = kept[0]
    return pa.Table.from_arrays(
        [
            taken.column("pair_id"),
            pa.array([first.src_lang] * len(kept), pa.string()),
            pa.array([first.tgt_lang] * len(kept), pa.string()),
            taken.column("src_text"),
            taken.column("tgt_text"),
            pa.array([first.source] * len(kept), pa.string()),
            pa.array(np.array([p.src_lid for p in kept], dtype=np.float32)),
            pa.array(np.array([p.tgt_lid for p in kept], dtype=np.float32)),
        ],
        schema=PAIR_SCHEMA,
    )


def median_ratio(paths: list[str], min_chars: int) -> float | None:
    """The pair's median src/tgt length ratio over all its raw rows (lengths only: no texts kept)."""
    hist = RatioHistogram(min_chars)
    for path in paths:
        for batch in read_parquet_batches(path, ["src_text", "tgt_text"], batch_size=16384):
            hist.add(pc.utf8_length(batch.column(0)).to_numpy(zero_copy_only=False),
                     pc.utf8_length(batch.column(1)).to_numpy(zero_copy_only=False))
    return hist.median()


def filter_language_pair(job: FilterJob) -> dict[str, Any]:
    """Filter one language pair and write the kept rows to ``job.output``; return its counts."""
    cfg = job.cfg
    identifier = LanguageIdentifier(cfg.langid, Path(job.model_path))
    median = median_ratio([p for _, p in job.inputs], cfg.filters.ratio_min_chars)
    filters = build_filters(FilterContext(cfg, identifier, median))
    src_lang, tgt_lang = job.pair.split("-")  # a raw file holds one language pair
    per_source: Counter = Counter()
    kept = 0
    with pq.ParquetWriter(job.output, PAIR_SCHEMA, compression="zstd") as writer:
        for source, path in job.inputs:
            row = 0  # the raw file's rows are the source's rows of the pair, in reading order
            for batch in read_parquet_batches(path, _COLUMNS, batch_size=cfg.langid.batch_size):
                ids, src, tgt = (batch.column(c).to_pylist() for c in _COLUMNS)
                pairs = [ParallelPair(src_lang, tgt_lang, a, b, source, i, row=row + k)
                         for k, (i, a, b) in enumerate(zip(ids, src, tgt), start=1)]
                row += len(pairs)
                per_source[source] += len(pairs)
                survivors = run_filters(filters, pairs)
                kept += len(survivors)
                if survivors:
                    writer.write_table(kept_rows(batch, pairs, survivors))
    pa.default_memory_pool().release_unused()  # keep RSS flat across pairs (mimalloc retains freed pages)
    rejected: Counter = Counter()
    examples: dict[str, list[dict]] = {}
    languages: dict[str, dict[str, Any]] = {}
    for f in filters:
        rejected.update(f.stats.dropped)
        for reason, rows in f.stats.examples.items():
            examples.setdefault(reason, []).extend(rows)
        if isinstance(f, LanguageFilter):
            languages = {lang: {"judged": s.judged, "accepted": s.accepted, "mislabels": dict(s.mislabels)}
                         for lang, s in f.languages.items()}
    n_in = sum(per_source.values())
    log.info("filtered %s: %d in, %d kept (median length ratio %s)", job.pair, n_in, kept,
             f"{median:.2f}" if median else "n/a")
    return {
        "pair": job.pair,
        "in": n_in,
        "kept": kept,
        "rejected": {r: rejected.get(r, 0) for r in REASONS},
        "sources": dict(per_source),
        "median_ratio": median,
        "languages": languages,
        "examples": examples,
    }
