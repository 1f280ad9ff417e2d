"""A Hugging Face data set through ``datasets``: OPUS-100 style (one config per pair, a dict column) or
multi-way (one config per language, rows aligned by index). A local copy wins over the hub."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from alignx.data import hub
from alignx.data.readers.pair_reader import (
    BATCH_ROWS, PairReader, ReaderParams, SourceError, TextPair, as_text, batched, declared_pairs, require_pair,
    template_fields,
)


class HubParams(ReaderParams):
    path: str  # hub id (Helsinki-NLP/opus-100) or a local dataset folder
    mirror_path: str | None = None  # local copy inside the data mirror: <mirror>/<mirror_path>/<config>
    layout: Literal["pairs", "multiway"] = "pairs"
    config: str | None = "{pair}"  # per pair ("pairs") or per language ("multiway"); see template_fields
    split: str = "train"
    revision: str | None = None  # a commit, tag or branch to pin; None: the default branch (resolved for keys)
    field: str = "translation"  # "pairs": a dict column keyed by language code
    column: str = "text"  # "multiway": the text column of each language's config
    pairs: list[str] | None = None  # "pairs": the language pairs the set holds, e.g. en-de
    languages: list[str] | None = None  # "multiway": the languages the set holds


class HubReader(PairReader):
    """Rows of a hub data set (or its local copy), as pairs of the languages its configs hold."""

    kind = "hub"
    Params = HubParams

    def __init__(self, name: str, params: HubParams, mirror: Path | None, missing: Path | None = None):
        super().__init__(name, params, mirror)
        self.missing = missing  # the mirror folder this reader stands in for, named in errors

    def has_pair(self, a: str, b: str) -> bool:
        if self.params.layout == "multiway":
            return a in (self.params.languages or []) and b in (self.params.languages or [])
        return frozenset((a, b)) in declared_pairs(self.params.pairs or [])

    def _roots(self) -> list[Path]:
        roots = []
        if self.params.mirror_path and self.mirror is not None:
            roots.append(self.local(self.params.mirror_path))
        local = self.local(self.params.path)
        if local.is_dir():
            roots.append(local)
        return roots

    def _config(self, *codes: str) -> str | None:
        return self.params.config.format(**template_fields(*codes)) if self.params.config else None

    def _open(self, *codes: str) -> Any:  # a datasets Dataset or IterableDataset
        return hub.open_split(self.name, self.params.path, self._config(*codes), self.params.split, self._roots(),
                              self.missing, revision=self.params.revision)

    def files(self, src: str, tgt: str) -> list[Path]:
        configs = [self._config(src, tgt)] if self.params.layout == "pairs" else [self._config(src), self._config(tgt)]
        found = [hub.local_copy(self._roots(), c) for c in configs]
        return sorted(f for d in found if d is not None for f in d.rglob("*") if f.is_file())

    def locate(self, src: str, tgt: str, row: int, side: int) -> str:
        config = self._config(src, tgt) if self.params.layout == "pairs" else self._config((src, tgt)[side])
        return f"{self.params.path} (config {config!r}, split {self.params.split!r}) row {row}"

    def read(self, src: str, tgt: str, limit: int | None = None) -> Iterator[list[TextPair]]:
        require_pair(self, src, tgt)
        if self.params.layout == "multiway":
            rows = self._multiway_rows(src, tgt)
        else:
            rows = self._pair_rows(src, tgt)
        return batched(itertools.islice(rows, limit))

    def _column(self, codes: tuple[str, ...], name: str) -> Iterator[list[Any]]:
        """One column of a config, batch by batch; a missing column names the columns found."""
        for batch in self._open(*codes).iter(batch_size=BATCH_ROWS):
            if name not in batch:
                raise SourceError(f"{self.params.path} (config {self._config(*codes)!r}): missing column "
                                  f"{name!r}; columns found: {', '.join(map(repr, batch))}")
            yield batch[name]

    def _pair_rows(self, src: str, tgt: str) -> Iterator[TextPair]:
        where = f"{self.params.path} (config {self._config(src, tgt)!r})"
        n = 0
        for rows in self._column((src, tgt), self.params.field):
            for row in rows:
                n += 1
                if not isinstance(row, dict) or src not in row or tgt not in row:
                    keys = list(row) if isinstance(row, dict) else []
                    raise SourceError(f"{where}: row {n}: {self.params.field!r} lacks {src!r} or {tgt!r}; "
                                      f"keys found: {', '.join(map(repr, keys)) or '(none)'}")
                yield as_text(row[src]), as_text(row[tgt])

    def _multiway_rows(self, src: str, tgt: str) -> Iterator[TextPair]:
        sides = [itertools.chain.from_iterable(self._column((c,), self.params.column)) for c in (src, tgt)]
        marker = object()
        for n, (a, b) in enumerate(itertools.zip_longest(*sides, fillvalue=marker), start=1):
            if a is marker or b is marker:
                short = self._config(src) if a is marker else self._config(tgt)
                raise SourceError(f"{self.params.path}: configs {self._config(src)!r} and {self._config(tgt)!r} "
                                  f"differ in length ({short!r} ends after {n - 1} rows)")
            yield as_text(a), as_text(b)
