"""Stage 2's general instructions (Alpaca / Bactrian-X fields): read from local files or hub data sets.

A hub set is read at the commit its ``revision`` resolves to, and keys caches by that commit
(``instruction_sources_fingerprint``), as hub parallel data does: an update on the hub is a new key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from alignx.artefacts import file_digest, fingerprint
from alignx.config import InstructionSource
from alignx.data import hub
from alignx.data.instructions import example_id
from alignx.data.schema import INSTRUCTION_SCHEMA
from alignx.jsonl import iter_jsonl
from alignx.languages import LANGUAGES

INSTRUCTION_FIELDS = ("instruction", "input", "output")


def _read_records(path: Path) -> list:
    """Rows of a JSON (a list, or an object holding one list), JSONL or Parquet file."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path).to_dict(orient="records")
    if suffix == ".jsonl":
        return [row for _, row in iter_jsonl(path)]
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"instruction file {path}: not valid JSON ({exc})") from None
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise ValueError(f"instruction file {path}: expected a list of rows or an object holding one list, "
                                 f"found an object with keys {sorted(data)}")
            data = lists[0]
        if not isinstance(data, list):
            raise ValueError(f"instruction file {path}: expected a list of rows, found {type(data).__name__}")
        return data
    raise ValueError(f"instruction file {path}: unsupported format {suffix!r}; expected .json, .jsonl or .parquet")


def validate_records(records: Sequence, where: str, language: str | None, source: str) -> pd.DataFrame:
    """Check Alpaca / Bactrian-X rows (instruction, input optional, output) and convert them.

    A row's language is its ``lang``/``language`` field, else ``language``, else 'und'.
    """
    rows = []
    for n, rec in enumerate(records, start=1):
        if not isinstance(rec, dict):
            raise ValueError(f"{where}, row {n}: expected an object with fields instruction/input/output, "
                             f"found {type(rec).__name__}")
        for name in ("instruction", "output"):
            if name not in rec or rec[name] is None:
                raise ValueError(f"{where}, row {n}: missing field {name!r} (expected instruction, input "
                                 f"(optional), output; found: {', '.join(sorted(map(str, rec))) or 'nothing'})")
        for name in INSTRUCTION_FIELDS:
            value = rec.get(name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{where}, row {n}: field {name!r} must be a string, found {type(value).__name__}")
        if not rec["instruction"].strip() or not rec["output"].strip():
            raise ValueError(f"{where}, row {n}: empty 'instruction' or 'output'")
        lang = rec.get("lang") or rec.get("language") or language or "und"
        rows.append({
            "example_id": example_id(lang, rec["instruction"], rec.get("input") or "", rec["output"]),
            "src_lang": lang, "tgt_lang": lang,
            "instruction": rec["instruction"], "input": rec.get("input") or "", "output": rec["output"],
            "kind": "general", "source": source,
        })
    return pd.DataFrame(rows, columns=INSTRUCTION_SCHEMA.names)


def hub_commit(source: InstructionSource) -> str:
    """The commit a hub source's ``revision`` resolves to; offline, "offline:<revision>" (as for parallel data,
    ``alignx.data.hub.dataset_revision``)."""
    return hub.dataset_revision(source.hub, source.revision)


def general_rows(source: InstructionSource) -> pd.DataFrame:
    """General instructions from a local file or, online, from the hub (``datasets.load_dataset``) at the
    commit ``source.revision`` resolves to."""
    if source.path is not None:
        path = Path(source.path)
        if not path.is_file():
            raise FileNotFoundError(f"instruction file {path} does not exist")
        records = _read_records(path)
        frame = validate_records(records, f"instruction file {path}", source.language, path.stem)
        return frame if source.max_examples is None else frame.head(source.max_examples)
    import datasets  # only needed online

    commit = hub_commit(source)
    # offline (or when the hub gives none) there is no commit: the revision as given (datasets' cache may hold it)
    revision = source.revision if commit.startswith(("offline:", "unresolved:")) else commit
    # The hub: one data set per config (Bactrian-X: one per language), each capped on its own.
    frames = []
    for config in source.hub_configs or [None]:
        data = datasets.load_dataset(source.hub, config, split=source.split, revision=revision)
        if source.max_examples is not None:
            data = data.select(range(min(source.max_examples, len(data))))
        language = source.language or (config if config in LANGUAGES else None)
        where = f"hub dataset {source.hub} ({config or 'default'}, {source.split}, commit {revision})"
        frames.append(validate_records(list(data), where, language, source.hub))
    return pd.concat(frames, ignore_index=True)


def instruction_sources_fingerprint(sources: Sequence[InstructionSource]) -> str:
    """What stage 2's general instructions are, for cache keys: each entry's settings with a local
    file's content digest (not its path) or a hub set's resolved commit (not its revision name)."""
    parts: list[object] = []
    for source in sources:
        settings = source.model_dump(mode="json", exclude={"path", "revision"})
        if source.path is not None:
            path = Path(source.path)
            parts.append([settings, file_digest(path) if path.is_file() else f"missing:{path}"])
        else:
            parts.append([settings, hub_commit(source)])
    return fingerprint(*parts)
