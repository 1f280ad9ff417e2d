"""The records a training stage writes beside its model, and how every reader reads them.

``alignx.json`` (the run record: stage, config, inputs, final losses) and ``train_log.jsonl`` (one
object per logged step) are the format the training stages write and the report and later stages
read; they belong with the artefacts, not inside the training code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alignx.jsonl import iter_jsonl

TRAIN_LOG = "train_log.jsonl"
RUN_RECORD = "alignx.json"  # what a stage wrote beside its model: stage, config, inputs, final losses


def read_run_record(model_dir: Path) -> dict[str, Any]:
    """The run record a stage wrote beside its model ({} for a model no stage of ours wrote)."""
    path = Path(model_dir) / RUN_RECORD
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: expected the run record a stage writes (a JSON object), found invalid JSON "
                         f"({exc.msg})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(record).__name__}")
    return record


def read_log(log_path: Path) -> list[dict[str, Any]]:
    """The per-step records of a ``train_log.jsonl``; a bad line raises naming the file and line."""
    rows = []
    for n, row in iter_jsonl(log_path):
        if not isinstance(row, dict) or "step" not in row:
            raise ValueError(f"{log_path} line {n}: expected an object with 'step' and loss fields, found {str(row)[:80]!r}")
        rows.append(row)
    return rows
