"""The parallel-pair and instruction schemas (Parquet), pair ids, and reading shard splits back."""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PAIR_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("src_lang", pa.string()),
        ("tgt_lang", pa.string()),
        ("src_text", pa.string()),
        ("tgt_text", pa.string()),
        ("source", pa.string()),
        ("src_lid", pa.float32()),
        ("tgt_lid", pa.float32()),
    ]
)

INSTRUCTION_SCHEMA = pa.schema(
    [
        ("example_id", pa.string()),
        ("src_lang", pa.string()),
        ("tgt_lang", pa.string()),
        ("instruction", pa.string()),
        ("input", pa.string()),
        ("output", pa.string()),
        ("kind", pa.string()),  # "translation" | "general"
        ("source", pa.string()),
    ]
)

MANIFEST = "_manifest.json"


def normalise_text(text: str) -> str:
    """Normalisation used for pair ids and exact-duplicate detection (NFKC, case-folded, spaces collapsed)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def pair_id(src_lang: str, tgt_lang: str, src_text: str, tgt_text: str) -> str:
    """Hash of the languages and the normalised texts (stable across runs and machines)."""
    key = "\x1f".join((src_lang, tgt_lang, normalise_text(src_text), normalise_text(tgt_text)))
    return hashlib.blake2b(key.encode("utf-8"), digest_size=12).hexdigest()


def read_split(shards_dir: str | Path, split: str, columns: list[str] | None = None) -> pd.DataFrame:
    """All rows of one split (``train``/``valid``) of a shard set, in a deterministic order.

    Layout: ``<shards_dir>/<split>/<src>-<tgt>/part-NNNNN.parquet``.
    """
    root = Path(shards_dir) / split
    files = sorted(root.glob("*/part-*.parquet"))
    if not files:
        raise FileNotFoundError(
            f"no shards for split {split!r} under {root} (expected <src>-<tgt>/part-NNNNN.parquet)"
        )
    frames = [pq.read_table(f, columns=columns).to_pandas() for f in files]
    return pd.concat(frames, ignore_index=True)
