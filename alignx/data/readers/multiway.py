"""One line-aligned file per language (NTREX-128, FLORES-200): line i is the same sentence in each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from alignx.data.readers.hub_dataset import HubParams
from alignx.data.readers.pair_reader import (
    PairReader, ReaderParams, SourceError, TextPair, read_aligned_files, require_pair, template_fields,
)


class MultiwayParams(ReaderParams):
    path: str
    files: str | dict[str, str]  # template, or per language with "*" as the default
    languages: list[str]
    hub: HubParams | None = None


class MultiwayReader(PairReader):
    """Any two of the set's languages form a pair, read from their two files side by side."""

    kind = "multiway"
    Params = MultiwayParams

    def has_pair(self, a: str, b: str) -> bool:
        return a in self.params.languages and b in self.params.languages

    def _file(self, code: str) -> Path:
        files = self.params.files
        template = files if isinstance(files, str) else files.get(code, files.get("*"))
        if template is None:
            raise SourceError(f"source {self.name!r}: no file template for {code!r} and no '*' default")
        return self.local(self.params.path) / template.format(**template_fields(code))

    def files(self, src: str, tgt: str) -> list[Path]:
        return [self._file(src), self._file(tgt)]

    def read(self, src: str, tgt: str, limit: int | None = None) -> Iterator[list[TextPair]]:
        require_pair(self, src, tgt)
        return read_aligned_files(*self.files(src, tgt), limit=limit)

    def locate(self, src: str, tgt: str, row: int, side: int) -> str:
        return f"{self.files(src, tgt)[side]} line {row}"
