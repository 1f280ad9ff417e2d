"""Reading a benchmark's documents: a local file in the hub's field layout, else the hub.

Local files come first (the data mirror, or ``eval.data_files`` overrides), so tests and offline
runs never touch the network. A bad file is reported with its path, line and what was expected.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alignx.config import REPO_ROOT
from alignx.data.hub import dataset_revision
from alignx.eval.benchmarks import BenchmarkSpec
from alignx.jsonl import iter_jsonl
from alignx.languages import get_language
from alignx.mirror import DataUnavailableError, hub_offline, require_mirror_path

log = logging.getLogger(__name__)

Documents = list[dict[str, Any]]


class BenchmarkDataError(ValueError):
    """A benchmark file exists but does not hold what its spec expects."""


# ---------------------------------------------------------------- document preprocessing
def _general_detokenize(text: str) -> str:
    text = text.replace(" n't", "n't").replace(" )", ")").replace("( ", "(")
    text = text.replace('" ', '"').replace(' "', '"')
    return re.sub(r" (['.,])", r"\1", text)


def paraphrase_detokenise(docs: Documents) -> Documents:
    """lm-eval's PAWS-X ``process_docs_paraphrases``: drop empty pairs, detokenise, strip the first
    sentence's final punctuation and lower-case the second sentence's first letter."""
    out = []
    for doc in docs:
        if doc["sentence1"] in (None, "") or doc["sentence2"] in (None, ""):
            continue
        s1 = _general_detokenize(doc["sentence1"]).strip()
        s2 = _general_detokenize(doc["sentence2"]).strip()
        if s1.endswith((".", ",", ";")):
            s1 = s1[:-1]
        out.append({**doc, "sentence1": s1, "sentence2": s2[0].lower() + s2[1:]})
    return out


PREPROCESSORS: dict[str, Callable[[Documents], Documents]] = {"paraphrase_detokenise": paraphrase_detokenise}


# ---------------------------------------------------------------- local files
def _read_jsonl(path: Path, fields: list[str]) -> Documents:
    return [_checked(doc, fields, path, f"line {n}") for n, doc in iter_jsonl(path, BenchmarkDataError)]


def _read_json(path: Path, fields: list[str]) -> Documents:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BenchmarkDataError(f"{path}: expected a JSON list of objects, found invalid JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise BenchmarkDataError(f"{path}: expected a JSON list of objects, found {type(data).__name__}")
    return [_checked(doc, fields, path, f"item {i}") for i, doc in enumerate(data)]


def _read_tsv(path: Path, columns: list[str], fields: list[str]) -> Documents:
    docs = []
    with path.open(encoding="utf-8", newline="") as fh:
        for n, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            cells = line.split("\t")
            if len(cells) != len(columns):
                raise BenchmarkDataError(
                    f"{path} line {n}: expected {len(columns)} tab-separated columns ({', '.join(columns)}), "
                    f"found {len(cells)}"
                )
            docs.append(_checked(dict(zip(columns, cells)), fields, path, f"line {n}"))
    return docs


def text_lines(path: Path) -> list[str]:
    """The lines of a text file split at newlines only (``str.splitlines`` also splits at U+2028 and
    other separators that can occur inside a sentence, which would break line alignment)."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _read_lines(path: Path) -> Documents:
    return [{"text": line} for line in text_lines(path)]


def _read_parquet(path: Path, fields: list[str]) -> Documents:
    import pandas as pd

    frame = pd.read_parquet(path)
    missing = [f for f in fields if f not in frame.columns]
    if missing:
        raise BenchmarkDataError(f"{path}: expected columns {fields}, missing {missing} (found {list(frame.columns)})")
    return frame.to_dict(orient="records")


def _checked(doc: Any, fields: list[str], path: Path, where: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise BenchmarkDataError(f"{path} {where}: expected a JSON object with fields {fields}, found {type(doc).__name__}")
    missing = [f for f in fields if f not in doc]
    if missing:
        raise BenchmarkDataError(
            f"{path} {where}: expected fields {fields}, missing {missing} (found {sorted(doc)})"
        )
    return doc


_FORMATS_BY_SUFFIX = {".jsonl": "jsonl", ".json": "json", ".tsv": "tsv", ".parquet": "parquet", ".txt": "lines"}


def read_local(path: Path, spec: BenchmarkSpec, fmt: str | None = None) -> Documents:
    """Documents of one local file in the spec's field layout (format from the spec or the suffix)."""
    fmt = fmt or spec.source.format
    fields = spec.source.fields
    if fmt == "jsonl":
        docs = _read_jsonl(path, fields)
    elif fmt == "json":
        docs = _read_json(path, fields)
    elif fmt == "tsv":
        docs = _read_tsv(path, spec.source.columns or fields, fields)
    elif fmt == "parquet":
        docs = _read_parquet(path, fields)
    else:
        docs = _read_lines(path)
    if not docs:
        raise BenchmarkDataError(f"{path}: no documents (empty file) for benchmark {spec.name!r}")
    return docs


# ---------------------------------------------------------------- locating the data
def local_path(spec: BenchmarkSpec, lang: str, mirror: Path | None, data_files: dict[str, str]) -> tuple[Path | None, str | None]:
    """The local file for one language (an ``eval.data_files`` override, else the mirror) and its format."""
    code = spec.code_for(lang)
    if spec.name in data_files:
        path = Path(data_files[spec.name].format(code=code, lang=lang))
        path = path if path.is_absolute() else REPO_ROOT / path
        return path, _FORMATS_BY_SUFFIX.get(path.suffix, spec.source.format)
    if spec.source.mirror is None or mirror is None:
        return None, None
    return mirror / spec.source.mirror.format(code=code, lang=lang), spec.source.format


def read_documents(
    spec: BenchmarkSpec,
    lang: str,
    mirror: Path | None,
    data_files: dict[str, str] | None = None,
    limit: int | None = None,
) -> Documents:
    """The evaluation documents of one benchmark and language: local file first, else the hub.

    Preprocessing (e.g. PAWS-X detokenisation) runs before ``limit`` keeps the first documents, as
    lm-eval's ``--limit`` does.
    """
    path, fmt = local_path(spec, lang, mirror, data_files or {})
    if path is not None and path.is_file():
        docs = read_local(path, spec, fmt)
    elif spec.source.hub and not hub_offline():
        docs = _read_hub(spec, lang)
    else:
        where = str(path) if path is not None else "(no data mirror and no eval.data_files entry)"
        hub = f" or the hub dataset {spec.source.hub}" if spec.source.hub else ""
        raise DataUnavailableError(
            f"benchmark {spec.name!r} ({lang}): data file not found at {where}; provide that file{hub} "
            f"(the hub is unreachable while HF_HUB_OFFLINE is set)"
        )
    if spec.preprocess and (spec.preprocess_languages is None or lang in spec.preprocess_languages):
        docs = PREPROCESSORS[spec.preprocess](docs)
    return docs[:limit] if limit is not None else docs


def _read_hub(spec: BenchmarkSpec, lang: str) -> Documents:
    from datasets import load_dataset

    config = spec.source.hub_config.format(code=spec.code_for(lang), lang=lang) if spec.source.hub_config else None
    log.info("reading %s (%s, split %s) from the hub", spec.source.hub, config, spec.source.split)
    try:
        data = load_dataset(spec.source.hub, config, split=spec.source.split, revision=spec.source.revision)
    except Exception as exc:  # datasets raises many types; the message must name what was asked for
        raise DataUnavailableError(
            f"benchmark {spec.name!r} ({lang}): cannot read hub dataset {spec.source.hub} config {config!r} "
            f"split {spec.source.split!r}: {exc}"
        ) from exc
    docs = [dict(row) for row in data]
    if spec.source.format == "lines" and docs and "text" not in docs[0]:
        raise BenchmarkDataError(f"hub dataset {spec.source.hub} ({config}): expected a 'text' field, found {sorted(docs[0])}")
    return [_checked(d, spec.source.fields, Path(spec.source.hub), f"row {i}") for i, d in enumerate(docs)]


def source_files(spec: BenchmarkSpec, langs: list[str], mirror: Path | None, data_files: dict[str, str] | None = None) -> list[Path | str]:
    """What identifies the data of these languages: local files where they exist, else hub coordinates."""
    out: list[Path | str] = []
    for lang in langs:
        path, _ = local_path(spec, lang, mirror, data_files or {})
        if path is not None and path.is_file():
            out.append(path)
        else:
            commit = dataset_revision(spec.source.hub, spec.source.revision) if spec.source.hub else "none"
            out.append(f"hub:{spec.source.hub}@{commit}/{spec.source.hub_config}/{spec.source.split}/{spec.code_for(lang)}")
    return out


# ---------------------------------------------------------------- multi-way parallel sets (alignment)
def parallel_file(set_name: str, lang: str) -> str:
    """Path of one language's file of a multi-way parallel set, relative to the data mirror."""
    entry = get_language(lang)
    if set_name == "flores":
        return f"flores200/{entry.flores}.devtest-head500"
    if set_name == "ntrex":
        if entry.ntrex is None:
            raise ValueError(f"NTREX-128 has no file for language {lang!r} in the registry")
        kind = "src" if entry.ntrex == "eng" else "ref"
        return f"ntrex128/newstest2019-{kind}.{entry.ntrex}.txt"
    raise ValueError(f"unknown parallel set {set_name!r}; known: flores, ntrex")


def read_parallel(set_name: str, langs: Sequence[str], mirror: Path | None, limit: int | None = None) -> dict[str, list[str]]:
    """Line-aligned sentences of each language (the first ``limit``); every file must have as many lines."""
    texts, counts = {}, {}
    for lang in langs:
        path = require_mirror_path(mirror, parallel_file(set_name, lang))
        lines = text_lines(path)
        counts[path] = len(lines)
        texts[lang] = lines[:limit] if limit is not None else lines
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"{p.name}: {n}" for p, n in counts.items())
        raise ValueError(f"{set_name} files are not line-aligned (expected equal line counts; found {listing})")
    return texts
