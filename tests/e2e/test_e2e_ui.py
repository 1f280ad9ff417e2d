"""End to end on a real Prefect server and process worker, in a browser: deploy, the run form, a run that
fails, its repair and Retry (the driver's ``ui`` part; test_e2e_operations.py runs the other part beside it)."""

from __future__ import annotations

import json

import pytest

from tests.e2e.driver import run_part

pytestmark = pytest.mark.e2e


def test_pipeline_deployment_fails_then_retry_resumes(tmp_path, mirror):
    out = run_part(tmp_path, mirror, "ui", timeout=560)
    tails = json.dumps(out.get("log_tails", {}))[-6000:]
    # the server kept its state in PostgreSQL (a private cluster the driver started), not SQLite
    assert out["database"].get("flow_runs", 0) >= 1 and out["database"]["version"], out["database"]

    assert {"pipeline/alignx-pipeline", "stage1/alignx-stage1", "stage2/alignx-stage2",
            "evaluate/alignx-evaluate", "data/alignx-data"} <= set(out["deployments"]), out["deployments"]
    assert out["schedule_active"] == [False]
    assert out["schedule_active_after_redeploy"] == [True], "a redeploy switched the user's schedule off"
    assert out["flow_run_name"].startswith("pipeline-smoke-"), out["flow_run_name"]
    # task runs say which arm they belong to
    assert {"stage1-alignx", "stage1-control", "stage2-control", "stage2-alignx", "evaluate-base",
            "evaluate-control", "evaluate-alignx", "collect-tatoeba"} <= set(out["task_run_names"]), out["task_run_names"]
    assert out["first_state"] == "FAILED", tails
    assert "val.zh.jsonl" in out["first_message"], out["first_message"]
    assert out["retry_state"] == "COMPLETED", (out["retry_message"], tails)
    assert out["run_count"] >= 2
    states = out["retry_task_states"]
    for name in ("collect", "langid-filter", "shard", "bootstrap", "stage1", "stage2"):
        mine = [s for s in states if s.startswith(name + ":")]
        assert mine and all(s.endswith(":Cached") for s in mine), (name, states)
    assert any(s.startswith("evaluate:") and s.endswith(":Completed") for s in states), states
    assert {"alignx-report", "data-counts"} <= set(out["artifact_keys"]), out["artifact_keys"]
    assert "xcopa" in out["report_excerpt"].lower()
    assert "**Report:** `" in out["report_excerpt"] and "report.md`" in out["report_excerpt"], out["report_excerpt"][:500]

    ui = out["ui"]  # the run form, Retry and the report artifact, in a real browser
    assert ui["form_parameters"]["params"]["profile"] == "smoke", ui["form_parameters"]
    assert "Failed" in ui["failed_page"] and "Completed" in ui["completed_page"], ui
    assert "alignx − control" in ui["report_page"] and "report.md" in ui["report_page"], ui["report_page"][:3000]
    # the plots are in the artifact itself, each decoded by the browser (a teammate's machine sees them too)
    plots = out["report_embedded_plots"]
    assert plots >= 3 and len(ui["report_images"]) >= plots, (plots, ui["report_images"])
    assert all(width > 0 and src.startswith("data:image/png") for _, width, src in ui["report_images"]), ui["report_images"]
