"""Parquet shards: filtered pairs split into train/valid by a hash of the pair id, in fixed-size parts.

Layout: ``<dir>/<split>/<src>-<tgt>/part-NNNNN.parquet`` (PAIR_SCHEMA, zstd) and ``_manifest.json``
with counts per split and language pair, rejection counts, the file list, the content fingerprint
and the config that produced it. The split depends only on the pair id, so it is the same on every
machine and run, and a pair never moves between splits when other pairs are added.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from alignx.artefacts import atomic_write_json, tree_fingerprint
from alignx.config import ShardConfig
from alignx.data.schema import MANIFEST, PAIR_SCHEMA

log = logging.getLogger(__name__)

SPLITS = ("train", "valid")


def read_parquet_batches(path: str | Path, columns: list[str] | None = None,
                         batch_size: int = 8192) -> Iterator[pa.RecordBatch]:
    """Stream a Parquet file one row group at a time (our files have row groups of a few thousand rows).

    ``ParquetFile.iter_batches`` reads ahead and its memory grows with the file; this stays flat.
    """
    pf = pq.ParquetFile(path)
    for i in range(pf.num_row_groups):
        yield from pf.read_row_group(i, columns=columns).to_batches(max_chunksize=batch_size)


def valid_mask(pair_ids: list[str], valid_fraction: float) -> np.ndarray:
    """True for pairs in the valid split: the first 32 bits of the (hex) pair id, as a fraction < valid_fraction."""
    head = np.frombuffer(bytes.fromhex("".join(p[:8] for p in pair_ids)), dtype=">u4")
    return head.astype(np.float64) / 2.0**32 < valid_fraction


class PartWriter:
    """Writes one split of one language pair as parts of at most ``rows_per_shard`` rows."""

    def __init__(self, folder: Path, rows_per_shard: int, compression: str):
        self.folder, self.rows_per_shard, self.compression = folder, rows_per_shard, compression
        self.files: list[dict[str, Any]] = []
        self._writer: pq.ParquetWriter | None = None
        self._rows = 0

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            if self._writer is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                path = self.folder / f"part-{len(self.files):05d}.parquet"
                self._writer = pq.ParquetWriter(path, PAIR_SCHEMA, compression=self.compression)
                self.files.append({"path": path, "rows": 0})
            take = min(table.num_rows, self.rows_per_shard - self._rows)
            self._writer.write_table(table.slice(0, take))
            self._rows += take
            self.files[-1]["rows"] += take
            table = table.slice(take)
            if self._rows >= self.rows_per_shard:
                self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer, self._rows = None, 0


def write_shard_set(pair_files: list[Path], out: Path, cfg: ShardConfig, provenance: dict[str, Any]) -> dict:
    """Shard the filtered per-pair files (``<src>-<tgt>.parquet``) into ``out``; return the manifest.

    ``provenance`` (the producing config, input fingerprint, rejection counts) goes into the manifest.
    """
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    files: list[dict[str, Any]] = []
    for path in sorted(pair_files):
        pair = path.stem
        writers = {s: PartWriter(out / s / pair, cfg.rows_per_shard, cfg.compression) for s in SPLITS}
        for batch in read_parquet_batches(path):
            table = pa.Table.from_batches([batch], schema=PAIR_SCHEMA)
            is_valid = valid_mask(table.column("pair_id").to_pylist(), cfg.valid_fraction)
            writers["valid"].write(table.filter(pa.array(is_valid)))
            writers["train"].write(table.filter(pa.array(~is_valid)))
        pa.default_memory_pool().release_unused()  # mimalloc otherwise keeps every pair's peak: RSS grows with N
        for split, writer in writers.items():
            writer.close()
            counts[split][pair] = sum(f["rows"] for f in writer.files)
            files += [{"path": f["path"].relative_to(out).as_posix(), "split": split, "pair": pair,
                       "rows": f["rows"]} for f in writer.files]
    manifest = {
        "fingerprint": tree_fingerprint(out),  # the part files only: written before this manifest
        "schema": PAIR_SCHEMA.names,
        "counts": counts,
        "rows": {s: sum(c.values()) for s, c in counts.items()},
        "files": files,
        "shard_config": cfg.model_dump(mode="json"),
        **provenance,
    }
    atomic_write_json(out / MANIFEST, manifest)
    log.info("shards: %s", ", ".join(f"{s} {n}" for s, n in manifest["rows"].items()))
    return manifest
