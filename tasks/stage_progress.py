"""Prefect observability for long library calls: progress artifacts and throttled run-log lines."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.logging import get_run_logger
from prefect.runtime import task_run

from alignx import launch
from alignx.artefacts import Artefact
from alignx.config import PipelineConfig


def stage1_run_name() -> str:
    """Stage 1's task run name in the UI: which arm it trains (``stage1-alignx``, ``stage1-control``)."""
    return "stage1-control" if (task_run.parameters or {}).get("control") else "stage1-alignx"


class ProgressReporter:
    """A ``progress(done, total, ...)`` callback for the library that feeds a Prefect progress artifact."""

    def __init__(self, key: str, description: str, min_interval_s: float = 5.0):
        self.key = key.lower().replace("_", "-")
        self.description = description
        self.min_interval_s = min_interval_s
        self._artifact_id = None
        self._last = 0.0

    def __call__(self, done: int, total: int, extra: Any = None) -> None:
        now = time.monotonic()
        finished = total and done >= total
        if not finished and now - self._last < self.min_interval_s:
            return
        self._last = now
        pct = 100.0 * done / total if total else 0.0
        detail = ""
        if isinstance(extra, dict):
            detail = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items())
        elif extra:
            detail = str(extra)
        get_run_logger().info("%s: %d/%d %s", self.description, done, total, detail)
        if self._artifact_id is None:
            self._artifact_id = create_progress_artifact(pct, key=self.key, description=self.description)
        else:
            update_progress_artifact(self._artifact_id, pct)


def run_observed(stage: str, args: dict[str, Any], cfg: PipelineConfig, progress: ProgressReporter) -> Artefact:
    """A stage (``alignx.launch.run_stage``) here, or as a launched process group whose log lines join
    this task's log and whose progress feeds ``progress``."""
    logger = get_run_logger()
    return launch.run_stage(stage, {k: str(v) if isinstance(v, Path) else v for k, v in args.items()}, cfg,
                            progress=progress, on_line=lambda line: logger.info("%s", line))
