"""A JSONL / TSV / Parquet file whose rows hold aligned texts in named columns (one per language)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq
from pydantic import field_validator

from alignx.data.readers.pair_reader import (
    BATCH_ROWS, MissingSourceFile, PairReader, ReaderParams, SourceError, TextPair, as_text, batched, decode_line,
    require_pair,
)
from alignx.jsonl import iter_jsonl
from alignx.languages import get_language


class TableParams(ReaderParams):
    path: str  # one file; relative paths are inside the data mirror
    format: Literal["jsonl", "tsv", "parquet"] | None = None  # None -> from the suffix
    columns: dict[str, str]  # language code -> column holding its text (one row = aligned texts)

    @field_validator("columns")
    @classmethod
    def _known_column_codes(cls, value: dict[str, str]) -> dict[str, str]:
        for code in value:
            get_language(code)
        return value


class TableReader(PairReader):
    """Any two languages with a column form a pair; a row is one aligned example."""

    kind = "table"
    Params = TableParams

    def has_pair(self, a: str, b: str) -> bool:
        return a in self.params.columns and b in self.params.columns

    def files(self, src: str, tgt: str) -> list[Path]:
        return [self.local(self.params.path)]

    def read(self, src: str, tgt: str, limit: int | None = None) -> Iterator[list[TextPair]]:
        require_pair(self, src, tgt)
        path = self.files(src, tgt)[0]
        if not path.is_file():
            raise MissingSourceFile(f"missing file {path} (source {self.name!r} in the catalogue)")
        cols = (self.params.columns[src], self.params.columns[tgt])
        rows = {"jsonl": _jsonl_rows, "tsv": _tsv_rows, "parquet": _parquet_rows}[self._format(path)](path, cols)
        return batched(itertools.islice(rows, limit))

    def _format(self, path: Path) -> str:
        fmt = self.params.format or {".jsonl": "jsonl", ".tsv": "tsv", ".parquet": "parquet"}.get(path.suffix)
        if fmt is None:
            raise SourceError(f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
                              f"set format: jsonl, tsv or parquet")
        return fmt

    def locate(self, src: str, tgt: str, row: int, side: int) -> str:
        path = self.files(src, tgt)[0]
        fmt = self._format(path)
        if fmt == "tsv":
            return f"{path} line {row + 1}"  # line 1 is the header
        if fmt == "jsonl":  # blank lines are skipped: count the rows again (an error path only)
            lines = (n for n, _ in iter_jsonl(path, SourceError))
            return f"{path} line {next(itertools.islice(lines, row - 1, None), '?')}"
        return f"{path} row {row}"


def _missing_column(path: Path, wanted: tuple[str, ...], found: list[str], where: str = "") -> SourceError:
    missing = [c for c in wanted if c not in found]
    return SourceError(f"{path}{where}: missing column {', '.join(map(repr, missing))}; "
                       f"columns found: {', '.join(map(repr, found)) or '(none)'}")


def _jsonl_rows(path: Path, cols: tuple[str, str]) -> Iterator[TextPair]:
    for n, row in iter_jsonl(path, SourceError):
        if not isinstance(row, dict) or cols[0] not in row or cols[1] not in row:
            raise _missing_column(path, cols, list(row) if isinstance(row, dict) else [], f": line {n}")
        yield as_text(row[cols[0]]), as_text(row[cols[1]])


def _tsv_rows(path: Path, cols: tuple[str, str]) -> Iterator[TextPair]:
    with path.open("rb") as fh:
        header = decode_line(next(fh, b""), path, 1).split("\t")
        if cols[0] not in header or cols[1] not in header:
            raise _missing_column(path, cols, header, " (header line)")
        ia, ib = header.index(cols[0]), header.index(cols[1])
        for n, raw in enumerate(fh, start=2):
            fields = decode_line(raw, path, n).split("\t")
            if len(fields) != len(header):
                raise SourceError(f"{path}: line {n}: expected {len(header)} tab-separated fields "
                                  f"(as in the header), found {len(fields)}")
            yield fields[ia], fields[ib]


def _parquet_rows(path: Path, cols: tuple[str, str]) -> Iterator[TextPair]:
    pf = pq.ParquetFile(path)
    found = pf.schema_arrow.names
    if cols[0] not in found or cols[1] not in found:
        raise _missing_column(path, cols, found)
    # no read-ahead threads: their buffers grow with the file
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=list(dict.fromkeys(cols)), use_threads=False):
        a, b = batch.column(cols[0]).to_pylist(), batch.column(cols[1]).to_pylist()
        yield from zip(map(as_text, a), map(as_text, b))
