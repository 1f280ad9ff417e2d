"""Experiment tracking: every training stage's curves and every evaluation's headline metrics, in
TensorBoard (event files under ``<run root>/tracking/tensorboard``, on by default, offline) and in MLflow
when ``tracking.mlflow_uri`` is set (a ``file:`` store or a server).

Runs are named ``<profile>/<arm>-<stage>`` (``<profile>/eval-<folder>`` for an evaluation), so the two arms
of a run, or two points of a sweep, sit side by side; the stage's config goes in as parameters. The
train log (``train_log.jsonl``) stays the record the pipeline reads: trackers get a copy of each row.
A tracker that cannot write (a server that is down) warns once and the stage goes on.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TRACKING_DIR = "tracking"
# train-log fields that are curves (the rest: step, batch hashes, ...)
CURVES = ("loss", "lm", "ctr", "lam", "usable", "lr", "grad_norm", "tokens_per_s", "step_s", "max_memory_gib",
          "peak_rss_gib")
_MLFLOW_PARAM_CHARS = 6000  # MLflow's limit on one parameter's value


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config as dotted keys with JSON values (parameters of a tracked run)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value, default=str)
    return out


def curves(row: dict[str, Any]) -> dict[str, float]:
    """The numeric curves of one train-log row, with tokens/s derived from tokens and step time."""
    values = {k: float(row[k]) for k in CURVES if isinstance(row.get(k), (int, float))}
    if "tokens_per_s" not in values and row.get("step_s"):
        values["tokens_per_s"] = float(row.get("tokens", 0)) / float(row["step_s"])
    return values


class Tracker:
    """One tracked run in every configured backend; ``log`` and ``close`` never raise."""

    def __init__(self, tracking_cfg, run_root: Path, profile: str, run_name: str, params: dict[str, Any],
                 key: str = "", start_step: int = 0):
        self.name = f"{profile}/{run_name}"
        self._writer = self._run = self._client = None
        self._warned: set[str] = set()
        if tracking_cfg.tensorboard:
            self._guard("tensorboard", lambda: self._open_tensorboard(run_root, profile, run_name, params, start_step))
        if tracking_cfg.mlflow_uri:
            self._guard("mlflow", lambda: self._open_mlflow(tracking_cfg, profile, params, key))

    @property
    def log_dir(self) -> Path | None:
        return Path(self._writer.log_dir) if self._writer is not None else None

    @property
    def mlflow_run_id(self) -> str | None:
        return self._run

    def _guard(self, backend: str, fn) -> None:
        try:
            fn()
        except Exception as exc:  # a tracker never stops training
            if backend not in self._warned:
                self._warned.add(backend)
                log.warning("tracking (%s) for %s stopped: %s", backend, self.name, exc)
            if backend == "tensorboard":
                self._writer = None
            else:
                self._run = None

    def _open_tensorboard(self, run_root: Path, profile: str, run_name: str, params: dict[str, Any],
                          start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        directory = Path(run_root) / TRACKING_DIR / "tensorboard" / profile / run_name
        # a resumed attempt drops the events its killed predecessor wrote after the checkpoint
        self._writer = SummaryWriter(str(directory), purge_step=start_step + 1 if start_step else None)
        table = "\n".join(f"| {k} | {v} |" for k, v in flatten(params).items())
        self._writer.add_text("config", "| key | value |\n|---|---|\n" + table, 0)

    def _open_mlflow(self, tracking_cfg, profile: str, params: dict[str, Any], key: str) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        if tracking_cfg.mlflow_uri.startswith("file:"):
            # MLflow 3 refuses its file store unless asked; a file: URI in the config is that request
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        client = MlflowClient(tracking_uri=tracking_cfg.mlflow_uri)
        experiment = tracking_cfg.experiment or profile
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        previous = client.search_runs([experiment_id], filter_string=f"tags.`alignx.key` = '{key}'",
                                      max_results=1) if key else []
        if previous:  # a retried stage continues its run: one curve, not a new run per attempt
            self._run = previous[0].info.run_id
            client.update_run(self._run, status="RUNNING")
        else:
            run = client.create_run(experiment_id, run_name=self.name, tags={"alignx.key": key, "alignx.profile": profile})
            self._run = run.info.run_id
            client.log_batch(self._run, params=[Param(k, v[:_MLFLOW_PARAM_CHARS]) for k, v in flatten(params).items()])
        self._client = client

    def log(self, step: int, values: dict[str, float]) -> None:
        if self._writer is not None:
            self._guard("tensorboard", lambda: [self._writer.add_scalar(k, v, step) for k, v in values.items()])
        if self._run is not None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self._guard("mlflow", lambda: self._client.log_batch(
                self._run, metrics=[Metric(k, v, now, step) for k, v in values.items()]))

    def close(self, ok: bool = True) -> None:
        if self._writer is not None:
            self._guard("tensorboard", self._writer.close)
            self._writer = None
        if self._run is not None:
            self._guard("mlflow", lambda: self._client.set_terminated(self._run, "FINISHED" if ok else "FAILED"))


def stage_tracker(cfg, stage: str, arm: str, stage_cfg: dict[str, Any], key: str, start_step: int = 0) -> Tracker:
    """The tracker of one training stage of ``cfg``'s run."""
    params = {"profile": cfg.name, "arm": arm, "stage": stage, "base_model": cfg.base_model,
              "languages": cfg.languages, stage: stage_cfg}
    return Tracker(cfg.tracking, cfg.resolved_run_root(), cfg.name, f"{arm}-{stage}", params, key, start_step)
