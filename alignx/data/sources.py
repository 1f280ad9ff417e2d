"""Source readers and the source catalogue (``data/sources.yaml``).

A reader turns one catalogue entry into streams of (src_text, tgt_text) batches per language pair.
Kinds: ``line_aligned`` (two line-aligned files per pair, Tatoeba), ``multiway`` (one line-aligned
file per language, NTREX / FLORES), ``table`` (JSONL / TSV / Parquet with named columns) and
``hub`` (``datasets.load_dataset``: a hub id, or a local copy saved with ``save_to_disk``).
"""

from __future__ import annotations

import itertools
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, ClassVar, Literal

import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from alignx.artefacts import file_digest
from alignx.config import SOURCES_FILE, ConfigError, fingerprint
from alignx.data import hub
from alignx.jsonl import iter_jsonl
from alignx.languages import get_language
from alignx.mirror import MIRROR_ENV, DataUnavailableError

log = logging.getLogger(__name__)

TextPair = tuple[str, str]
BATCH_ROWS = 4096  # rows per yielded batch: big enough to amortise, small enough to keep memory flat


class SourceError(ValueError):
    """A source's content is not what its catalogue entry says (bad encoding, lengths, columns)."""


class MissingSourceFile(SourceError, FileNotFoundError):
    """A file that a catalogue entry declares is absent."""


# ---------------------------------------------------------------- catalogue parameters
class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cross_pairs: bool = False  # also X<->Y between non-pivot languages (multi-way sets)

    @field_validator("languages", "pairs", check_fields=False)
    @classmethod
    def _known_codes(cls, value: list[str] | None) -> list[str] | None:
        for item in value or []:
            for code in item.split("-"):
                get_language(code)  # raises, listing the known codes
        return value


class HubParams(_Params):
    path: str  # hub id (Helsinki-NLP/opus-100) or a local dataset folder
    mirror_path: str | None = None  # local copy inside the data mirror: <mirror>/<mirror_path>/<config>
    layout: Literal["pairs", "multiway"] = "pairs"
    config: str | None = "{pair}"  # per pair ("pairs") or per language ("multiway"); see _fields
    split: str = "train"
    revision: str | None = None  # a commit, tag or branch to pin; None: the default branch (resolved for keys)
    field: str = "translation"  # "pairs": a dict column keyed by language code
    column: str = "text"  # "multiway": the text column of each language's config
    pairs: list[str] | None = None  # "pairs": the language pairs the set holds, e.g. en-de
    languages: list[str] | None = None  # "multiway": the languages the set holds


class LineAlignedParams(_Params):
    path: str  # folder, relative to the data mirror
    files: str  # template for one side's file, relative to path
    pairs: list[str]  # language pairs the folder holds, e.g. en-de
    hub: HubParams | None = None


class MultiwayParams(_Params):
    path: str
    files: str | dict[str, str]  # template, or per language with "*" as the default
    languages: list[str]
    hub: HubParams | None = None


class TableParams(_Params):
    path: str  # one file; relative paths are inside the data mirror
    format: Literal["jsonl", "tsv", "parquet"] | None = None  # None -> from the suffix
    columns: dict[str, str]  # language code -> column holding its text (one row = aligned texts)

    @field_validator("columns")
    @classmethod
    def _known_column_codes(cls, value: dict[str, str]) -> dict[str, str]:
        for code in value:
            get_language(code)
        return value


def _fields(*codes: str) -> dict[str, str]:
    """Template fields: {code} {iso3} {flores} {ntrex} of the (last) language, and {pair} {pair3} {src} {tgt}."""
    langs = [get_language(c) for c in codes]
    last = langs[-1]
    out = {"code": last.code, "iso3": last.iso3, "flores": last.flores, "ntrex": last.ntrex or last.iso3}
    if len(codes) == 2:
        out.update(src=codes[0], tgt=codes[1], pair="-".join(sorted(codes)),
                   pair3="-".join(sorted(lang.iso3 for lang in langs)))
    return out


def _declared(pairs: list[str]) -> set[frozenset[str]]:
    return {frozenset(p.split("-")) for p in pairs}


def _wanted_pairs(pivot: str, languages: list[str], has_pair: Callable[[str, str], bool],
                  cross: bool) -> list[tuple[str, str]]:
    """(pivot, X) for every requested X the source holds; (X, Y) in sorted order when cross pairs are on."""
    out = [(pivot, x) for x in languages if x != pivot and has_pair(pivot, x)]
    if cross:
        others = sorted(x for x in languages if x != pivot)
        out += [(a, b) for a, b in itertools.combinations(others, 2) if has_pair(a, b)]
    return out


# ---------------------------------------------------------------- line reading
def _decode(raw: bytes, path: Path, line_no: int) -> str:
    """One line of a text file without its line ending; on line 1 also without a byte-order mark
    (files saved by some Windows tools open with one; it is not part of the first text)."""
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{path}: line {line_no}: not valid UTF-8 ({exc.reason} at byte {exc.start} of the line)"
        ) from None
    return text.removeprefix("\ufeff") if line_no == 1 else text


def _open(path: Path) -> IO[bytes]:
    if not path.is_file():
        raise MissingSourceFile(f"missing file {path} (declared by the source catalogue)")
    return path.open("rb")


def read_aligned_files(src_path: Path, tgt_path: Path, limit: int | None = None) -> Iterator[list[TextPair]]:
    """Stream two line-aligned UTF-8 files as batches of (src, tgt) pairs; the first ``limit`` lines.

    The files must have the same number of lines, also when ``limit`` stops reading early (the rest
    is counted, not decoded).
    """
    with _open(src_path) as fa, _open(tgt_path) as fb:
        batch: list[TextPair] = []
        n, rest_a, rest_b = 0, 0, 0
        while limit is None or n < limit:
            a, b = fa.readline(), fb.readline()
            if not a or not b:  # one file ended: the other must end here too
                rest_a, rest_b = int(bool(a)), int(bool(b))
                break
            n += 1
            batch.append((_decode(a, src_path, n), _decode(b, tgt_path, n)))
            if len(batch) >= BATCH_ROWS:
                yield batch
                batch = []
        rest_a += sum(1 for _ in fa)
        rest_b += sum(1 for _ in fb)
        if rest_a != rest_b:
            raise SourceError(
                f"line counts differ between aligned files: {src_path} has {n + rest_a} lines, "
                f"{tgt_path} has {n + rest_b} lines"
            )
        if batch:
            yield batch


# ---------------------------------------------------------------- readers
class PairReader(ABC):
    """One catalogue entry: which language pairs it holds and how to stream them."""

    kind: ClassVar[str]
    Params: ClassVar[type[_Params]]

    def __init__(self, name: str, params: _Params, mirror: Path | None):
        self.name, self.params, self.mirror = name, params, mirror

    def _local(self, relative: str) -> Path:
        path = Path(relative)
        if path.is_absolute() or self.mirror is None:
            return path
        return self.mirror / path

    @abstractmethod
    def has_pair(self, a: str, b: str) -> bool:
        """Whether the source holds the language pair (either order)."""

    def pairs(self, pivot: str, languages: list[str]) -> list[tuple[str, str]]:
        """The requested language pairs this source holds, pivot first."""
        for code in [pivot, *languages]:
            get_language(code)
        return _wanted_pairs(pivot, languages, self.has_pair, self.params.cross_pairs)

    @abstractmethod
    def read(self, src: str, tgt: str, limit: int | None = None) -> Iterator[list[TextPair]]:
        """Batches of (src_text, tgt_text) for one language pair, in file order, at most ``limit`` rows."""

    def files(self, src: str, tgt: str) -> list[Path]:
        """Input files of one pair (for fingerprints); empty when read from the hub."""
        return []

    def locate(self, src: str, tgt: str, row: int, side: int) -> str:
        """Where the ``row``-th pair (1-based, in ``read`` order) of ``src``-``tgt`` comes from, for error
        messages: a file and line where there is one; ``side`` 0 is the src text, 1 the tgt text."""
        return f"source {self.name!r} ({src}-{tgt}) row {row}"


class LineAlignedReader(PairReader):
    """Two line-aligned files per pair (Tatoeba: ``<pair3>/tatoeba.<pair3>.<iso3>``)."""

    kind = "line_aligned"
    Params = LineAlignedParams

    def has_pair(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in _declared(self.params.pairs)

    def files(self, src: str, tgt: str) -> list[Path]:
        root = self._local(self.params.path)
        fields = _fields(src, tgt)
        return [root / self.params.files.format(**{**fields, **_fields(code)}) for code in (src, tgt)]

    def read(self, src: str, tgt: str, limit: int | None = None) -> Iterator[list[TextPair]]:
        _require_pair(self, src, tgt)
        return read_aligned_files(*self.files(src, tgt), limit=limit)

    def locate(self, src: str, tgt: str, row: int, side: int) -> str:
        return f"{self.files(src, tgt)[side]} line {row}"


class MultiwayReader(PairReader):
    """One line-aligned file per language (NTREX-128, FLORES-200): line i is the same sentence in each."""

    kind = "multiway"
    Params = MultiwayParams

    def has_pair(self, a: str, b: str) -> bool:
        return a in self.params.languages and b in self.params.languages

    def _file(self, code: str) -> Path:
        files = self.params.files
        template = files if isinstance(files, str) else files.get(code, files.get("*"))
        if template is None:
            raise SourceError(f"source {self.name!r}: no file template for {code!r} and no '*' default")
        return self._local(self.params.path) / template.format(**_fields(code))

    def files(self, src: str, tgt: str) -> list[Path]:
        return [self._file(src), self._file(tgt)]

    def read(self, src: str, tgt: str, limit: int | None = None) -> Iterator[list[TextPair]]:
        _require_pair(self, src, tgt)
        return read_aligned_files(*self.files(src, tgt), limit=limit)

    def locate(self, src: str, tgt: str, row: int, side: int) -> str:
        return f"{self.files(src, tgt)[side]} line {row}"


class TableReader(PairReader):
    """A JSONL / TSV / Parquet file whose rows hold aligned texts in named columns (one per language)."""

    kind = "table"
    Params = TableParams

    def has_pair(self, a: str, b: str) -> bool:
        return a in self.params.columns and b in self.params.columns

    def files(self, src: str, tgt: str) -> list[Path]:
        return [self._local(self.params.path)]

    def read(self, src: str, tgt: str, limit: int | None = None) -> Iterator[list[TextPair]]:
        _require_pair(self, src, tgt)
        path = self.files(src, tgt)[0]
        if not path.is_file():
            raise MissingSourceFile(f"missing file {path} (source {self.name!r} in the catalogue)")
        cols = (self.params.columns[src], self.params.columns[tgt])
        rows = {"jsonl": _jsonl_rows, "tsv": _tsv_rows, "parquet": _parquet_rows}[self._format(path)](path, cols)
        return _batched(itertools.islice(rows, limit))

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


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _jsonl_rows(path: Path, cols: tuple[str, str]) -> Iterator[TextPair]:
    for n, row in iter_jsonl(path, SourceError):
        if not isinstance(row, dict) or cols[0] not in row or cols[1] not in row:
            raise _missing_column(path, cols, list(row) if isinstance(row, dict) else [], f": line {n}")
        yield _text(row[cols[0]]), _text(row[cols[1]])


def _tsv_rows(path: Path, cols: tuple[str, str]) -> Iterator[TextPair]:
    with path.open("rb") as fh:
        header = _decode(next(fh, b""), path, 1).split("\t")
        if cols[0] not in header or cols[1] not in header:
            raise _missing_column(path, cols, header, " (header line)")
        ia, ib = header.index(cols[0]), header.index(cols[1])
        for n, raw in enumerate(fh, start=2):
            fields = _decode(raw, path, n).split("\t")
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
        yield from zip(map(_text, a), map(_text, b))


def _batched(rows: Iterator[TextPair]) -> Iterator[list[TextPair]]:
    while batch := list(itertools.islice(rows, BATCH_ROWS)):
        yield batch


def _require_pair(reader: PairReader, src: str, tgt: str) -> None:
    get_language(src), get_language(tgt)
    if not reader.has_pair(src, tgt):
        raise SourceError(f"source {reader.name!r} does not hold the pair {src}-{tgt}")


class HubReader(PairReader):
    """A Hugging Face data set through ``datasets``: OPUS-100 style (one config per pair, a dict column)
    or multi-way (one config per language, rows aligned by index). A local copy wins over the hub."""

    kind = "hub"
    Params = HubParams

    def __init__(self, name: str, params: HubParams, mirror: Path | None, missing: Path | None = None):
        super().__init__(name, params, mirror)
        self.missing = missing  # the mirror folder this reader stands in for, named in errors

    def has_pair(self, a: str, b: str) -> bool:
        if self.params.layout == "multiway":
            return a in (self.params.languages or []) and b in (self.params.languages or [])
        return frozenset((a, b)) in _declared(self.params.pairs or [])

    def _roots(self) -> list[Path]:
        roots = []
        if self.params.mirror_path and self.mirror is not None:
            roots.append(self._local(self.params.mirror_path))
        local = self._local(self.params.path)
        if local.is_dir():
            roots.append(local)
        return roots

    def _config(self, *codes: str) -> str | None:
        return self.params.config.format(**_fields(*codes)) if self.params.config else None

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
        _require_pair(self, src, tgt)
        if self.params.layout == "multiway":
            rows = self._multiway_rows(src, tgt)
        else:
            rows = self._pair_rows(src, tgt)
        return _batched(itertools.islice(rows, limit))

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
                yield _text(row[src]), _text(row[tgt])

    def _multiway_rows(self, src: str, tgt: str) -> Iterator[TextPair]:
        sides = [itertools.chain.from_iterable(self._column((c,), self.params.column)) for c in (src, tgt)]
        marker = object()
        for n, (a, b) in enumerate(itertools.zip_longest(*sides, fillvalue=marker), start=1):
            if a is marker or b is marker:
                short = self._config(src) if a is marker else self._config(tgt)
                raise SourceError(f"{self.params.path}: configs {self._config(src)!r} and {self._config(tgt)!r} "
                                  f"differ in length ({short!r} ends after {n - 1} rows)")
            yield _text(a), _text(b)


# ---------------------------------------------------------------- the catalogue
READERS: dict[str, type[PairReader]] = {
    r.kind: r for r in (LineAlignedReader, MultiwayReader, TableReader, HubReader)
}


def load_catalogue(path: Path = SOURCES_FILE) -> dict[str, tuple[type[PairReader], _Params]]:
    """Read and validate every entry of the source catalogue; all problems are reported at once."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(str(path), [f"cannot read the source catalogue: {exc}"]) from None
    problems, out = [], {}
    for name, entry in raw.items():
        entry = dict(entry or {})
        kind = entry.pop("kind", None)
        if kind not in READERS:
            problems.append(f"{name}: unknown kind {kind!r}; known kinds: {', '.join(sorted(READERS))}")
            continue
        try:
            out[name] = (READERS[kind], READERS[kind].Params.model_validate(entry))
        except ValidationError as exc:
            problems += [f"{name}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    if problems:
        raise ConfigError(str(path), problems)
    return out


def open_source(name: str, mirror: Path | None, catalogue: Path = SOURCES_FILE) -> PairReader:
    """The reader of one catalogue source; a mirror set missing from the mirror falls back to its hub entry."""
    entries = load_catalogue(catalogue)
    if name not in entries:
        raise ConfigError(str(catalogue), [f"unknown source {name!r}; known sources: {', '.join(sorted(entries))}"])
    cls, params = entries[name]
    reader = cls(name, params, mirror)
    if cls in (HubReader, TableReader):
        return reader  # they name their own missing files / unreachable hub
    root = reader._local(params.path)
    if (mirror is not None or root.is_absolute()) and root.is_dir():
        return reader
    hub_params = getattr(params, "hub", None)
    if hub_params is not None:
        # The hub reader uses a local copy of the hub set if there is one, else the hub; when neither
        # works its error names this mirror folder too.
        log.info("source %s: %s is not in the data mirror; reading %s instead", name, root, hub_params.path)
        return HubReader(name, hub_params, mirror, missing=root)
    raise DataUnavailableError(
        f"source {name!r}: {root if mirror is not None else params.path + ' (no data mirror found)'} does not exist: "
        f"set {MIRROR_ENV} (or data_mirror) to a folder with the layout of ../shared/data; or give {name!r} a "
        f"hub: block in {catalogue} to read it from the Hugging Face hub"
    )


def source_inputs_fingerprint(reader: PairReader, pairs: list[tuple[str, str]]) -> str:
    """Fingerprint of what a source would read for these pairs: its entry and its files' contents."""
    parts: list[object] = [reader.kind, reader.params.model_dump(mode="json")]
    for src, tgt in pairs:
        for path in reader.files(src, tgt):
            parts.append([str(path.name), file_digest(path) if path.is_file() else "missing"])
    if isinstance(reader, HubReader) and not any(reader.files(s, t) for s, t in pairs):
        # read from the hub: the commit the data set resolves to keys it (a changed set is a new key)
        parts.append(["hub", hub.dataset_revision(reader.params.path, reader.params.revision)])
    return fingerprint(*parts)
