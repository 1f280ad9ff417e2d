"""Fixtures for the data-stage tests: real Tatoeba / NTREX slices and a small private mirror copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignx.config import PipelineConfig
from alignx.languages import get_language
from alignx.profiles import parse_config

SLICE = 400  # pairs per language: enough for the retention thresholds, fast enough for CI
LID_LANGS = ["bn", "de", "es", "fr", "ja", "ru", "th", "zh"]


def tatoeba_folder(code: str) -> str:
    return "-".join(sorted(["eng", get_language(code).iso3]))


@pytest.fixture(scope="session")
def tatoeba_slices(mirror: Path) -> dict[str, list[tuple[str, str]]]:
    """The first SLICE (English, X) pairs of every Tatoeba language, read by the reader under test."""
    from alignx.data.source_catalogue import open_source

    reader = open_source("tatoeba", mirror)
    return {x: [p for batch in reader.read("en", x, limit=SLICE) for p in batch] for x in [*LID_LANGS, "sw"]}


def copy_head(src: Path, dst: Path, lines: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with src.open("rb") as fh:
        head = [line for _, line in zip(range(lines), fh)]
    dst.write_bytes(b"".join(head))


@pytest.fixture()
def small_mirror(tmp_path: Path, mirror: Path) -> Path:
    """A private mirror: the first 300 lines of Tatoeba and NTREX for de/zh/sw (tests may corrupt it)."""
    root = tmp_path / "mirror"
    for code in ("de", "zh", "sw"):
        folder = tatoeba_folder(code)
        for f in (mirror / "tatoeba" / folder).iterdir():
            copy_head(f, root / "tatoeba" / folder / f.name, 300)
    for name in ("newstest2019-src.eng.txt", "newstest2019-ref.deu.txt", "newstest2019-ref.zho_Hans.txt",
                 "newstest2019-ref.swa.txt"):
        copy_head(mirror / "ntrex128" / name, root / "ntrex128" / name, 300)
    return root


def make_config(mirror: Path, run_root: Path, **data: object) -> PipelineConfig:
    """A pipeline config over a mirror, languages de/zh/sw, one worker unless given."""
    return parse_config({"name": "t", "run_root": str(run_root), "data_mirror": str(mirror),
                         "languages": ["de", "zh", "sw"], "data": {"workers": 1, **data}})
