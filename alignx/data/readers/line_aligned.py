"""Two line-aligned files per language pair (Tatoeba: ``<pair3>/tatoeba.<pair3>.<iso3>``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from alignx.data.readers.hub_dataset import HubParams
from alignx.data.readers.pair_reader import (
    PairReader, ReaderParams, TextPair, declared_pairs, read_aligned_files, require_pair, template_fields,
)


class LineAlignedParams(ReaderParams):
    path: str  # folder, relative to the data mirror
    files: str  # template for one side's file, relative to path
    pairs: list[str]  # language pairs the folder holds, e.g. en-de
    hub: HubParams | None = None


class LineAlignedReader(PairReader):
    """Line i of one side's file is the translation of line i of the other's."""

    kind = "line_aligned"
    Params = LineAlignedParams

    def has_pair(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in declared_pairs(self.params.pairs)

    def files(self, src: str, tgt: str) -> list[Path]:
        root = self.local(self.params.path)
        fields = template_fields(src, tgt)
        return [root / self.params.files.format(**{**fields, **template_fields(code)}) for code in (src, tgt)]

    def read(self, src: str, tgt: str, limit: int | None = None) -> Iterator[list[TextPair]]:
        require_pair(self, src, tgt)
        return read_aligned_files(*self.files(src, tgt), limit=limit)

    def locate(self, src: str, tgt: str, row: int, side: int) -> str:
        return f"{self.files(src, tgt)[side]} line {row}"
