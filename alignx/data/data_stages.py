"""The data stages' entry points: collect -> language-ID filter -> Parquet shards (no Prefect here).

Each stage writes one directory artefact under the run root through ``atomic_dir`` and then
``write_marker``, and returns its ``Artefact`` record (path, content fingerprint, small meta).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from alignx.artefacts import Artefact, atomic_dir, atomic_write_json, fingerprint, read_marker, write_marker
from alignx.config import ConfigError, PipelineConfig
from alignx.data.filtering import FilterJob, filter_language_pair, rows_of
from alignx.data.filters import REASONS, ControlCharError
from alignx.data.langid import prepare_model
from alignx.data.readers.pair_reader import PairReader, SourceError
from alignx.data.schema import PAIR_SCHEMA, pair_id
from alignx.data.shards import write_shard_set
from alignx.data.source_catalogue import open_source, source_inputs_fingerprint
from alignx.mirror import DataUnavailableError, resolve_mirror
from alignx.progress import Progress

log = logging.getLogger(__name__)

REPORT = "report.json"
# Below these sizes starting worker processes (about 0.5 s of imports each) costs more than it saves;
# reading is cheap next to language ID, so collect needs far more pairs to gain from a second core.
PARALLEL_MIN_ROWS = 50_000
COLLECT_PARALLEL_MIN_PAIRS = 1_000_000
BYTES_PER_PAIR = 80  # a Tatoeba pair's two lines, for sizing the collect work before reading it
TOP_MISLABELS = 3


# ---------------------------------------------------------------- collect
def data_source_fingerprint(source: str, cfg: PipelineConfig) -> str:
    """Fingerprint of what ``collect_source`` would read: the catalogue entry and its files' contents."""
    reader = open_source(source, resolve_mirror(cfg.data_mirror))
    return source_inputs_fingerprint(reader, reader.pairs(cfg.pivot, cfg.languages))


@dataclass(frozen=True)
class CollectJob:
    """One language pair of one source to read into a raw Parquet file."""

    reader: PairReader
    src: str
    tgt: str
    limit: int | None
    output: str


def collect_pair(job: CollectJob) -> int:
    """Read one language pair into ``job.output`` (PAIR_SCHEMA, LID scores NaN); return the row count."""
    n, src, tgt, source = 0, job.src, job.tgt, job.reader.name
    with pq.ParquetWriter(job.output, PAIR_SCHEMA, compression="zstd") as writer:
        for batch in job.reader.read(src, tgt, job.limit):
            nan = np.full(len(batch), np.nan, dtype=np.float32)
            writer.write_table(pa.Table.from_pydict({
                "pair_id": [pair_id(src, tgt, a, b) for a, b in batch],
                "src_lang": [src] * len(batch), "tgt_lang": [tgt] * len(batch),
                "src_text": [p[0] for p in batch], "tgt_text": [p[1] for p in batch],
                "source": [source] * len(batch), "src_lid": nan, "tgt_lid": nan,
            }, schema=PAIR_SCHEMA))
            n += len(batch)
    pa.default_memory_pool().release_unused()  # RSS stays flat in N (mimalloc keeps freed pages otherwise)
    log.info("collect %s %s-%s: %d pairs", source, src, tgt, n)
    return n


def _input_bytes(reader: PairReader, src: str, tgt: str, limit: int | None) -> int:
    size = sum(f.stat().st_size for f in reader.files(src, tgt) if f.is_file())
    return size if limit is None else min(size, limit * BYTES_PER_PAIR)


def collect_source(source: str, cfg: PipelineConfig, run_root: Path, progress: Progress | None = None) -> Artefact:
    """Read every pair of ``cfg.languages`` (with ``cfg.pivot``) that a catalogue source holds.

    Writes ``run_root/raw/<source>/<src>-<tgt>.parquet`` (PAIR_SCHEMA, LID scores NaN), at most
    ``cfg.data.max_pairs_per_pair`` rows each (the first ones, in file order).
    """
    reader = open_source(source, resolve_mirror(cfg.data_mirror))
    pairs = reader.pairs(cfg.pivot, cfg.languages)
    if not pairs:
        raise ValueError(f"source {source!r} holds none of the pairs {cfg.pivot}-{{{', '.join(cfg.languages)}}}")
    out = Path(run_root) / "raw" / source
    limit = cfg.data.max_pairs_per_pair
    with atomic_dir(out) as tmp:
        jobs = [CollectJob(reader, s, t, limit, str(tmp / f"{s}-{t}.parquet")) for s, t in pairs]
        weights = [_input_bytes(reader, s, t, limit) for s, t in pairs]
        counts = _map(collect_pair, jobs, weights, cfg.data.workers, COLLECT_PARALLEL_MIN_PAIRS * BYTES_PER_PAIR,
                      progress, lambda j: f"collect {source} {j.src}-{j.tgt}", count_jobs=True)
    return write_marker(out, "raw", {"source": source, "pairs": {f"{s}-{t}": n for (s, t), n in zip(pairs, counts)}})


def _map(fn: Callable[[Any], Any], jobs: list[Any], weights: list[int], workers: int, min_weight: int,
         progress: Progress | None, label: Callable[[Any], str], count_jobs: bool = False) -> list[Any]:
    """``fn`` over jobs, results in job order; in worker processes (heaviest first) when the work is
    big enough to repay starting them. Progress counts jobs or job weights."""
    results: list[Any] = [None] * len(jobs)
    total = len(jobs) if count_jobs else sum(weights)
    done = 0
    workers = min(workers, len(jobs))
    if workers > 1 and sum(weights) >= min_weight:
        # spawn, not fork: the caller may run threads (Prefect), which fork does not copy safely.
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            order = sorted(range(len(jobs)), key=lambda i: -weights[i])
            futures = [(i, pool.submit(fn, jobs[i])) for i in order]
            for i, future in futures:
                results[i] = future.result()
                done += 1 if count_jobs else weights[i]
                if progress:
                    progress(done, total, label(jobs[i]))
        return results
    for i, job in enumerate(jobs):
        results[i] = fn(job)
        done += 1 if count_jobs else weights[i]
        if progress:
            progress(done, total, label(job))
    return results


# ---------------------------------------------------------------- filter
def _jobs(raw: list[Artefact], cfg: PipelineConfig, tmp: Path, model_path: Path) -> list[FilterJob]:
    inputs: dict[str, list[tuple[str, str]]] = {}
    for record in raw:
        source = record.meta.get("source", Path(record.path).name)
        for path in sorted(Path(record.path).glob("*.parquet")):
            inputs.setdefault(path.stem, []).append((source, str(path)))
    return [FilterJob(pair, tuple(files), str(tmp / f"{pair}.parquet"), cfg.data, str(model_path))
            for pair, files in sorted(inputs.items())]


def build_report(results: list[dict[str, Any]], cfg: PipelineConfig) -> dict[str, Any]:
    """Counts per language pair and reason, LID retention per language, and retention warnings."""
    langs: dict[str, dict[str, Any]] = {}
    for r in results:
        for lang, s in r.pop("languages").items():
            agg = langs.setdefault(lang, {"judged": 0, "accepted": 0, "mislabels": Counter()})
            agg["judged"] += s["judged"]
            agg["accepted"] += s["accepted"]
            agg["mislabels"].update(s["mislabels"])
    languages, warnings = {}, []
    floor = cfg.data.langid.retention_floor
    for lang in sorted({lang for r in results for lang in r["pair"].split("-")}):
        if not cfg.data.langid.policy(lang).enabled:
            languages[lang] = {"lid": "off"}
            continue
        agg = langs.get(lang, {"judged": 0, "accepted": 0, "mislabels": Counter()})
        retention = agg["accepted"] / agg["judged"] if agg["judged"] else None
        top = agg["mislabels"].most_common(TOP_MISLABELS)
        languages[lang] = {"judged": agg["judged"], "accepted": agg["accepted"], "retention": retention,
                           "top_mislabels": [[label, n] for label, n in top]}
        if retention is not None and retention < floor:
            mislabels = ", ".join(f"{label} ({n})" for label, n in top) or "none"
            warnings.append(f"language {lang}: language ID kept {retention:.1%} of {agg['judged']} sentences, "
                            f"below retention_floor {floor:.0%}; top mislabels: {mislabels}")
            log.warning("%s", warnings[-1])
    for r in results:
        if r["kept"] == 0:
            warnings.append(_no_pairs_kept(r["pair"], r["in"], r["rejected"]))
            log.warning("%s", warnings[-1])
    total_rejected = {reason: sum(r["rejected"][reason] for r in results) for reason in REASONS}
    return {
        "pairs": {r["pair"]: {k: v for k, v in r.items() if k != "pair"} for r in results},
        "languages": languages,
        "warnings": warnings,
        "totals": {"in": sum(r["in"] for r in results), "kept": sum(r["kept"] for r in results),
                   "rejected": total_rejected},
        "reasons": list(REASONS),
    }


def filter_pairs(raw: list[Artefact], cfg: PipelineConfig, run_root: Path, progress: Progress | None = None) -> Artefact:
    """Language ID and filters over all raw sources (dedup across sources), per language pair.

    Writes ``run_root/filtered/<fp>/<src>-<tgt>.parquet`` and ``report.json``; ``fp`` hashes the
    input fingerprints and the filter config, so different configs never overwrite each other.
    """
    fp = fingerprint([r.fingerprint for r in raw], cfg.data.langid, cfg.data.filters, cfg.pivot, cfg.languages)
    out = Path(run_root) / "filtered" / fp
    model_path = prepare_model(cfg.data.langid)
    try:
        with atomic_dir(out) as tmp:
            jobs = _jobs(raw, cfg, tmp, model_path)
            results = _map(filter_language_pair, jobs, [rows_of([p for _, p in j.inputs]) for j in jobs],
                           cfg.data.workers, PARALLEL_MIN_ROWS, progress, lambda j: f"filter {j.pair}")
            report = build_report(results, cfg)
            report["inputs"] = [{"source": r.meta.get("source"), "fingerprint": r.fingerprint} for r in raw]
            report["config"] = {"langid": cfg.data.langid.model_dump(mode="json"),
                                "filters": cfg.data.filters.model_dump(mode="json"), "pivot": cfg.pivot}
            atomic_write_json(tmp / REPORT, report)
    except ControlCharError as exc:  # control_chars: fail; the filter knew the source and row, name the file
        raise exc.located(_origin(exc, cfg)) from None
    meta = {"report": REPORT, "counts": summary_table(report), "warnings": report["warnings"],
            "retention": {k: v.get("retention") for k, v in report["languages"].items()}}
    return write_marker(out, "filtered", meta)


def _origin(exc: ControlCharError, cfg: PipelineConfig) -> str:
    """The source file and line of the pair the filter stopped at (its source and row when the source
    is not in the catalogue or its files are gone)."""
    if exc.row <= 0:
        return exc.where
    try:
        reader = open_source(exc.source, resolve_mirror(cfg.data_mirror))
        return reader.locate(exc.src_lang, exc.tgt_lang, exc.row, exc.side)
    except (ConfigError, DataUnavailableError, SourceError, OSError):
        return exc.where


def _no_pairs_kept(pair: str, n_in: int, rejected: dict[str, int]) -> str:
    if n_in == 0:
        return f"pair {pair}: no pairs kept: the sources gave none"
    reasons = ", ".join(f"{reason} {n}" for reason, n in rejected.items() if n) or "none"
    return f"pair {pair}: no pairs kept of {n_in} read; rejected: {reasons}"


class NoPairsKeptError(ValueError):
    """Filtering left one or more language pairs without any pairs: training would silently lose them.

    ``counts`` maps each such pair to its ``in`` count and its non-zero rejection counts per reason.
    """

    def __init__(self, counts: dict[str, dict[str, int]]):
        self.counts = counts
        pairs = "; ".join(_no_pairs_kept(pair, c["in"], {r: n for r, n in c.items() if r != "in"})
                          for pair, c in counts.items())
        super().__init__(f"{len(counts)} language pair(s) kept no pairs after filtering: {pairs}. Check the "
                         f"sources and data.filters / data.langid, or drop the language from languages")

    def __reduce__(self) -> tuple[Any, ...]:
        return NoPairsKeptError, (self.counts,)


def check_pairs_kept(filtered: Artefact | dict | str | Path) -> None:
    """Raise ``NoPairsKeptError`` naming every language pair that kept no pairs, with its rejection
    counts per reason; return quietly when each pair kept at least one. Takes what ``summary_table`` takes."""
    empty = {row["pair"]: {"in": row["in"], **{r: row[r] for r in REASONS if row.get(r)}}
             for row in summary_table(filtered) if row["pair"] != "all" and row["kept"] == 0}
    if empty:
        raise NoPairsKeptError(empty)


def summary_table(filtered: Artefact | dict | str | Path) -> list[dict[str, Any]]:
    """Rows ``{pair, in, kept, <reason>: n ..., warning}`` per language pair, then an ``all`` row.

    ``warning`` is empty, or says that the pair kept no pairs (the ``all`` row: how many pairs did
    not). Takes the filter artefact (or its marker), its report dict, or the path of its folder.
    """
    if isinstance(filtered, (str, Path)):
        filtered = read_marker(Path(filtered)) or {"path": str(filtered)}
    if isinstance(filtered, Artefact):
        if "counts" in filtered.meta:
            return filtered.meta["counts"]
        filtered = {"path": filtered.path}
    if "pairs" not in filtered:
        filtered = json.loads((Path(filtered["path"]) / REPORT).read_text(encoding="utf-8"))
    rows = [{"pair": pair, "in": c["in"], "kept": c["kept"], **{r: c["rejected"].get(r, 0) for r in REASONS},
             "warning": "" if c["kept"] else "no pairs kept"} for pair, c in filtered["pairs"].items()]
    if rows:
        empty = sum(1 for r in rows if not r["kept"])
        rows.append({"pair": "all", **{k: sum(r[k] for r in rows) for k in ("in", "kept", *REASONS)},
                     "warning": f"{empty} pair(s) kept no pairs" if empty else ""})
    return rows


# ---------------------------------------------------------------- shards
def write_shards(filtered: Artefact, cfg: PipelineConfig, run_root: Path) -> Artefact:
    """Train/valid Parquet shards of the filtered pairs at ``run_root/shards/<fp>/`` with ``_manifest.json``."""
    fp = fingerprint(filtered.fingerprint, cfg.data.shard)
    out = Path(run_root) / "shards" / fp
    report_path = Path(filtered.path) / REPORT
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else {}
    provenance = {
        "config": {"data": cfg.data.model_dump(mode="json"), "pivot": cfg.pivot, "languages": cfg.languages},
        "filtered": {"path": filtered.path, "fingerprint": filtered.fingerprint},
        "rejections": {pair: c["rejected"] for pair, c in report.get("pairs", {}).items()},
        "lid_retention": {lang: v.get("retention", v.get("lid")) for lang, v in report.get("languages", {}).items()},
        "warnings": report.get("warnings", []),
    }
    with atomic_dir(out) as tmp:
        manifest = write_shard_set(sorted(Path(filtered.path).glob("*.parquet")), tmp, cfg.data.shard, provenance)
    meta = {"counts": manifest["counts"], "rows": manifest["rows"], "content_fingerprint": manifest["fingerprint"],
            "filtered": filtered.path}
    return write_marker(out, "shards", meta)
