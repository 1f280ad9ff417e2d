"""What every source reader shares: the reader interface, its parameters' base, its errors, and the
line-aligned text reading that Tatoeba, NTREX and FLORES files all need.

A reader turns one catalogue entry (``data/sources.yaml``) into batches of (src_text, tgt_text) pairs
per language pair; each kind lives in its own module of this package.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator

from alignx.languages import get_language

TextPair = tuple[str, str]
BATCH_ROWS = 4096  # rows per yielded batch: big enough to amortise, small enough to keep memory flat


class SourceError(ValueError):
    """A source's content is not what its catalogue entry says (bad encoding, lengths, columns)."""


class MissingSourceFile(SourceError, FileNotFoundError):
    """A file that a catalogue entry declares is absent."""


class ReaderParams(BaseModel):
    """Base of a reader's catalogue parameters: unknown keys are errors, language codes must be known."""

    model_config = ConfigDict(extra="forbid")

    cross_pairs: bool = False  # also X<->Y between non-pivot languages (multi-way sets)

    @field_validator("languages", "pairs", check_fields=False)
    @classmethod
    def _known_codes(cls, value: list[str] | None) -> list[str] | None:
        for item in value or []:
            for code in item.split("-"):
                get_language(code)  # raises, listing the known codes
        return value


def template_fields(*codes: str) -> dict[str, str]:
    """Template fields: {code} {iso3} {flores} {ntrex} of the (last) language, and {pair} {pair3} {src} {tgt}."""
    langs = [get_language(c) for c in codes]
    last = langs[-1]
    out = {"code": last.code, "iso3": last.iso3, "flores": last.flores, "ntrex": last.ntrex or last.iso3}
    if len(codes) == 2:
        out.update(src=codes[0], tgt=codes[1], pair="-".join(sorted(codes)),
                   pair3="-".join(sorted(lang.iso3 for lang in langs)))
    return out


def declared_pairs(pairs: list[str]) -> set[frozenset[str]]:
    """Language pairs as a catalogue lists them (``en-de``), each as an unordered set of two codes."""
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
def decode_line(raw: bytes, path: Path, line_no: int) -> str:
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
            batch.append((decode_line(a, src_path, n), decode_line(b, tgt_path, n)))
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


# ---------------------------------------------------------------- the reader interface
class PairReader(ABC):
    """One catalogue entry: which language pairs it holds and how to stream them."""

    kind: ClassVar[str]
    Params: ClassVar[type[ReaderParams]]

    def __init__(self, name: str, params: ReaderParams, mirror: Path | None):
        self.name, self.params, self.mirror = name, params, mirror

    def local(self, relative: str) -> Path:
        """A catalogue path: inside the data mirror when relative and there is one, else as given."""
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


def require_pair(reader: PairReader, src: str, tgt: str) -> None:
    """Raise naming the source when it does not hold ``src``-``tgt`` (or a code is unknown)."""
    get_language(src), get_language(tgt)
    if not reader.has_pair(src, tgt):
        raise SourceError(f"source {reader.name!r} does not hold the pair {src}-{tgt}")


def as_text(value: object) -> str:
    """A cell as text: None (a missing value) is the empty string."""
    return "" if value is None else str(value)


def batched(rows: Iterator[TextPair]) -> Iterator[list[TextPair]]:
    """Rows in batches of ``BATCH_ROWS``."""
    while batch := list(itertools.islice(rows, BATCH_ROWS)):
        yield batch
