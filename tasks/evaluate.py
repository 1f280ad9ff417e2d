"""Prefect tasks for evaluation and the comparison report."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from alignx.artefacts import Artefact
from alignx.config import PipelineConfig
from alignx.eval import report
from alignx.eval.finished_parts import EVAL_SECTIONS
from tasks.caching import output_key, stage_cache
from tasks.retries import EVAL_RETRY
from tasks.stage_progress import ProgressReporter, run_observed


# The evaluate task keys on the config sections an evaluation reads (EVAL_SECTIONS: the align layer,
# the LID config, data.sources besides eval), so a changed layer never returns a stale measurement.
# The report reads only these (its inputs are the evaluations).
REPORT_SECTIONS = ["name", "eval.benchmarks", "eval.bootstrap_resamples", "eval.bootstrap_seed"]


@task(name="evaluate", task_run_name="evaluate-{name}", cache_policy=stage_cache(EVAL_SECTIONS, "evaluate"),
      persist_result=True, tags=["gpu"], **EVAL_RETRY)
def evaluate(model: Artefact, benchmark_fingerprint: str, cfg: PipelineConfig, name: str) -> Artefact:
    """Benchmarks and alignment metrics of one checkpoint (keyed on model + benchmark data + config)."""
    out = cfg.resolved_run_root() / "eval" / f"{name}-{output_key()}"
    return run_observed("evaluate", {"model": model.path, "out": out}, cfg,
                        ProgressReporter(f"evaluate-{name}", f"evaluate {name}"))


@task(name="report", cache_policy=stage_cache(REPORT_SECTIONS), persist_result=True, **EVAL_RETRY)
def write_report(evals: dict[str, Artefact], curves: dict[str, str], cfg: PipelineConfig) -> Artefact:
    """The comparison report (Markdown + plots) over every evaluated arm."""
    out = cfg.resolved_run_root() / "report" / output_key()
    return report.write_report({k: Path(v.path) for k, v in evals.items()}, cfg, out,
                               curves={k: Path(v) for k, v in curves.items()})
