"""The tasks an evaluation has finished, kept until its output is written, so a rerun continues it.

A real model's evaluation runs for an hour or more (FLORES generation on a CPU), and a killed one
used to start again from its first item. Each finished task (one benchmark and language, or one
alignment set and encoding) is written at once, atomically, to ``.<out>.parts/<task>.json`` beside
the output directory, under a key of everything its result depends on: the model's content, the
config sections the evaluation reads, the benchmark files' content and the evaluation code. A rerun
into the same output reads the tasks whose key matches and runs only the others; a part written for
another model, config or code is ignored and rewritten. The folder goes once the output is written.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from alignx.artefacts import atomic_write_text, fingerprint, read_marker
from alignx.code_closure import code_fingerprint
from alignx.config import PipelineConfig
from alignx.distributed_run import process_state
from alignx.eval.evaluation_plan import benchmark_fingerprint

log = logging.getLogger(__name__)

PARTS_SUFFIX = ".parts"


def parts_dir(out_dir: Path) -> Path:
    """Where the finished tasks of the evaluation writing ``out_dir`` wait: a hidden sibling."""
    out_dir = Path(out_dir)
    return out_dir.with_name(f".{out_dir.name}{PARTS_SUFFIX}")


def model_identity(model_path: str) -> str:
    """The model's content: its artefact fingerprint, else each file's name, size and mtime, else its name."""
    path = Path(model_path)
    marker = read_marker(path) if path.is_dir() else None
    if marker is not None:
        return marker.fingerprint
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return fingerprint([(p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files])
    return str(model_path)  # a hub id: the same name, the same model


# What an evaluation reads of the config: eval, the align layer (the report's default layer), the LID
# config (off-target rates) and data.sources (alignment on a set the run trains on is refused). The
# evaluate task keys on these sections too (tasks/evaluate.py).
EVAL_SECTIONS = ["eval", "languages", "pivot", "data_mirror", "stage1.align_layer", "data.langid", "data.sources"]


def _section(cfg: PipelineConfig, dotted: str) -> Any:
    node: Any = cfg
    for name in dotted.split("."):
        node = getattr(node, name)
    return node.model_dump(mode="json") if hasattr(node, "model_dump") else node


def evaluation_key(model_path: str, cfg: PipelineConfig) -> str:
    """Everything a task's result depends on: the model, ``EVAL_SECTIONS``, the benchmark files, the code."""
    return fingerprint(model_identity(model_path), {s: _section(cfg, s) for s in EVAL_SECTIONS},
                       benchmark_fingerprint(cfg), code_fingerprint(["alignx.eval.runner"]))


class FinishedParts:
    """The finished tasks of one evaluation: read once at the start, each new one written as it ends.

    Under several processes every process reads the same parts (the skip decisions agree) and only
    the main process writes them.
    """

    def __init__(self, out_dir: Path, key: str):
        self.dir, self.key = parts_dir(out_dir), key
        self.writes = process_state().is_main_process
        self.found: dict[str, Any] = {}
        for file in sorted(self.dir.glob("*.json")) if self.dir.is_dir() else []:
            try:
                doc = json.loads(file.read_text(encoding="utf-8"))
                if not isinstance(doc, dict) or "key" not in doc or "value" not in doc:
                    raise ValueError("expected an object with 'key' and 'value'")
            except (OSError, ValueError) as exc:
                log.warning("%s: unreadable finished task (%s); it runs again", file, exc)
                continue
            if doc["key"] != self.key:
                log.info("%s was written for another model, config or code; it runs again", file)
                continue
            self.found[file.stem] = doc["value"]

    def get(self, task: str) -> Any | None:
        """A task an earlier attempt finished under the same key, or None."""
        value = self.found.get(task)
        if value is not None:
            log.info("%s: read from %s (finished by an earlier attempt)", task, self.dir / f"{task}.json")
        return value

    def put(self, task: str, value: Any) -> None:
        if self.writes:
            # key order kept (no sort_keys): the items files of a continued evaluation are byte for byte
            # those of an uninterrupted one
            text = json.dumps({"key": self.key, "value": value}, ensure_ascii=False)
            atomic_write_text(self.dir / f"{task}.json", text)

    def remove(self) -> None:
        """After the output is written: the parts are in it."""
        if self.writes:
            shutil.rmtree(self.dir, ignore_errors=True)
