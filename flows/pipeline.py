"""The end-to-end pipeline: data -> bootstrap -> stage 1 -> stage 2 -> evaluate -> report, for every arm.

Arms: base, SFT-only (stage 2 from base), control (stage 1 with both lambdas 0, then stage 2) and
AlignX. Each arm's stages are their own cached tasks, so adding an arm never retrains the others, and
retrying a failed run re-runs only the stages that did not complete.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from alignx.artefacts import Artefact
from flows import chain
from flows.params import PipelineParams
from tasks import evaluate as eval_tasks

ORDER = ("data", "bootstrap", "stage1", "stage2", "evaluate")


@flow(name="pipeline")
def pipeline(params: PipelineParams = PipelineParams()) -> dict[str, Any]:
    """Run the whole AlignX pipeline on a profile and return where its artefacts are."""
    log = get_run_logger()
    cfg = params.config()  # validates the whole config before any work
    stop = ORDER.index(params.stop_after) if params.stop_after else len(ORDER) - 1
    log.info("profile %s, arms %s, run root %s", cfg.name, cfg.arms, cfg.resolved_run_root())

    shards = chain.run_data(cfg)
    result: dict[str, Any] = {"shards": shards.path}
    if stop < ORDER.index("bootstrap"):
        return result
    base = chain.run_base(cfg, shards)
    result["base"] = base.path
    if stop < ORDER.index("stage1"):
        return result

    models: dict[str, dict[str, Artefact]] = {}
    for arm in cfg.arms:
        if stop < ORDER.index("stage2") and arm in ("alignx", "control"):
            models[arm] = {"stage1": chain.run_stage1(cfg, base, shards, arm)}
        elif stop >= ORDER.index("stage2"):
            models[arm] = chain.train_arm(cfg, arm, base, shards)
    result["models"] = {arm: {k: v.path for k, v in m.items()} for arm, m in models.items()}
    if stop < ORDER.index("evaluate"):
        return result

    evals: dict[str, Artefact] = {}
    for arm, stages in models.items():
        evals[arm] = chain.run_evaluate(cfg, stages["final"], arm)
        if "stage1" in stages and cfg.eval.include_stage1 and stages["stage1"] is not stages["final"]:
            evals[f"{arm}-stage1"] = chain.run_evaluate(cfg, stages["stage1"], f"{arm}-stage1")
    report = eval_tasks.write_report(evals, chain.curves_of(models), cfg)
    create_markdown_artifact(report.meta.get("markdown", ""), key="alignx-report",
                             description=f"AlignX report, profile {cfg.name}")
    summary = report.meta.get("summary", [])
    if summary:
        create_table_artifact([{"comparison": line} for line in summary], key="alignx-summary",
                              description="differences with 95% bootstrap intervals")
    result["evals"] = {k: v.path for k, v in evals.items()}
    result["report"] = report.meta.get("report", report.path)
    log.info("report: %s", result["report"])
    return result
