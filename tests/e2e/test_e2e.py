"""End to end on a real Prefect server and process worker: deploy, trigger, fail, repair, retry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.flows.conftest import copy_mirror

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


# The one test over the suite's 600 s limit: a server, two workers, a browser and five pipeline runs
# in one story (the durations table of `make test` shows what it costs).
@pytest.mark.timeout(1500)
def test_pipeline_deployment_fails_then_retry_resumes(tmp_path, mirror):
    local_mirror = copy_mirror(mirror, tmp_path / "mirror", ["deu-eng", "eng-zho", "eng-swa"], ["flores200", "xcopa", "mgsm"])
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("PREFECT_")}
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "e2e" / "driver.py"), str(tmp_path), str(local_mirror)],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=1400)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("E2E-RESULT ")]
    assert proc.returncode == 0 and lines, f"driver failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    out = json.loads(lines[-1][len("E2E-RESULT "):])
    tails = json.dumps(out.get("log_tails", {}))[-6000:]

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

    crash = out["crash"]  # kill -9 of a pipeline run in stage 1 after a checkpoint, then Retry
    assert crash["killed"] == 1 and crash["locks_after_kill"] >= 1, crash
    assert crash["killed_state"] == "CRASHED", crash
    assert crash["retry_state"] == "COMPLETED", (crash, tails)
    assert crash["dead_attempt_states"] == ["CRASHED"], crash
    assert len(crash["resumed_from"]) == 1 and crash["resumed_from"][0] >= 5, crash

    dispatch = out["dispatch"]  # dispatch: deployments, children on the GPU pool's worker
    assert dispatch["state"] == "COMPLETED", (dispatch, tails)
    kids = dispatch["children"]
    for name in ("stage1-smoke-alignx", "stage2-smoke-alignx", "evaluate-smoke-alignx", "evaluate-smoke-alignx-stage1"):
        assert f"{name}@alignx-gpu:COMPLETED" in kids, (name, kids)
    assert dispatch["failing_state"] == "FAILED", dispatch
    assert "stage 'stage1'" in dispatch["failing_message"] and "max_length=8" in dispatch["failing_message"], dispatch
    assert "stage1-smoke-alignx:FAILED" in dispatch["failing_children"], dispatch
