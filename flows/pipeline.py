"""The end-to-end pipeline: data -> bootstrap -> stage 1 -> stage 2 -> evaluate -> report, for every arm.

Arms: base, SFT-only (stage 2 from base), control (stage 1 with both lambdas 0, then stage 2) and
AlignX. Each arm's stages are their own cached tasks, so adding an arm never retrains the others, and
retrying a failed run re-runs only the stages that did not complete. The arms' chains run concurrently
(``parallel_stages`` at a time), so two GPU workers train the control and AlignX together.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from alignx.stages_and_arms import STAGE1_ARMS, STAGES
from flows import stage_chain
from flows.attempts import end_earlier_attempts
from flows.params import PipelineParams, flow_run_name
from tasks import evaluate as eval_tasks
from tasks import preflight_task
from tasks.caching import run_verified


PLOT_EMBED_BYTES = 1_000_000  # a larger plot is named by its path, not embedded


def report_artifact_markdown(meta: dict[str, Any]) -> str:
    """The report artifact: where report.md is on the run root, the report's tables, then every plot as an
    image inside the artifact (a data URI: a browser on any machine shows it without the worker's disk)."""
    head = [f"**Report:** `{meta.get('report', '')}`"]
    plots = meta.get("plots") or {}
    images = []
    for title, path in plots.items():
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            images.append(f"- {title}: `{path}` (not readable here: {exc.strerror})")
            continue
        if len(data) > PLOT_EMBED_BYTES:
            images.append(f"- {title}: `{path}` ({len(data) // 1024} KiB: too large to embed)")
        else:
            images.append(f"### {title}\n\n![{title}](data:image/png;base64,{base64.b64encode(data).decode()})")
    body = "\n\n".join(head) + "\n\n" + meta.get("markdown", "")
    return body + ("\n\n## Plots\n\n" + "\n\n".join(images) if images else "")


@flow(name="pipeline", flow_run_name=flow_run_name("pipeline"))
def pipeline(params: PipelineParams = PipelineParams()) -> dict[str, Any]:
    """Run the whole AlignX pipeline on a profile and return where its artefacts are."""
    log = get_run_logger()
    end_earlier_attempts()  # a retry first frees what its dead attempt held
    cfg = params.config()  # validates the whole config before any work
    stop = STAGES.index(params.stop_after) if params.stop_after else len(STAGES) - 1
    log.info("profile %s, arms %s, run root %s", cfg.name, cfg.arms, cfg.resolved_run_root())

    preflight_task.preflight(cfg)  # every stage's inputs checked before any work, all problems at once
    shards = stage_chain.run_data(cfg)
    result: dict[str, Any] = {"shards": shards.path}
    if stop < STAGES.index("bootstrap"):
        return result
    base = stage_chain.run_base(cfg, shards)
    result["base"] = base.path
    if stop < STAGES.index("stage1"):
        return result

    # The arms are independent: each runs its chain (stage 1 -> stage 2 -> evaluations) as a future,
    # cfg.parallel_stages at a time; the gpu concurrency limit and the GPU pool bound the stages.
    through = STAGES[stop]
    arms = [arm for arm in cfg.arms if through != "stage1" or arm in STAGE1_ARMS]
    arm_runs = stage_chain.run_arm_chains(cfg, arms, base, shards, through)
    models = {arm: run.models for arm, run in arm_runs.items()}
    result["models"] = {arm: {k: v.path for k, v in m.items()} for arm, m in models.items()}
    if stop < STAGES.index("evaluate"):
        return result

    evals = {name: record for run in arm_runs.values() for name, record in run.evals.items()}
    report = run_verified(eval_tasks.write_report, evals, stage_chain.curves_of(models), cfg)
    create_markdown_artifact(report_artifact_markdown(report.meta), key="alignx-report",
                             description=f"AlignX report, profile {cfg.name}")
    summary = report.meta.get("summary", [])
    if summary:
        create_table_artifact([{"comparison": line} for line in summary], key="alignx-summary",
                              description="differences with 95% bootstrap intervals")
    result["evals"] = {k: v.path for k, v in evals.items()}
    result["report"] = report.meta.get("report", report.path)
    log.info("report: %s", result["report"])
    return result
