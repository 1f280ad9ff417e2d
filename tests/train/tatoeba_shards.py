"""Tiny parallel shards in PAIR_SCHEMA, read straight from the Tatoeba mirror (no data stage needed)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from alignx.data.schema import PAIR_SCHEMA, pair_id
from alignx.languages import get_language


def tatoeba_pairs(mirror: Path, lang: str, limit: int, skip: int = 0) -> list[tuple[str, str]]:
    """(X sentence, English sentence) pairs of one Tatoeba set, lines ``skip..skip+limit``."""
    x3 = get_language(lang).iso3
    folder = next(p for p in (mirror / "tatoeba").iterdir() if set(p.name.split("-")) == {x3, "eng"})
    read = lambda code: (folder / f"tatoeba.{folder.name}.{code}").read_text(encoding="utf-8").splitlines()
    xs, ens = read(x3), read("eng")
    return [(x.strip(), e.strip()) for x, e in zip(xs, ens)][skip : skip + limit]


def write_shards(root: Path, pairs_by_lang: dict[str, list[tuple[str, str]]], split: str = "train") -> Path:
    """Write ``<root>/<split>/<x>-en/part-00000.parquet`` per language (X as source, English as target)."""
    for lang, pairs in pairs_by_lang.items():
        rows = [
            {"pair_id": pair_id(lang, "en", x, e), "src_lang": lang, "tgt_lang": "en", "src_text": x,
             "tgt_text": e, "source": "tatoeba", "src_lid": 1.0, "tgt_lid": 1.0}
            for x, e in pairs
        ]
        out = root / split / f"{lang}-en"
        out.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=PAIR_SCHEMA), out / "part-00000.parquet")
    return root
