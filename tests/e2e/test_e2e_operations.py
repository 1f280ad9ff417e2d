"""End to end on a real Prefect server with a CPU and a GPU pool worker: ``kill -9`` of a deployment run in
stage 1 and its Retry from the checkpoint, then the heavy stages dispatched to the GPU pool's deployments
(the driver's ``operations`` part, beside test_e2e_ui.py's)."""

from __future__ import annotations

import json

import pytest

from tests.e2e.driver import run_part

pytestmark = pytest.mark.e2e


def test_killed_run_resumes_and_stages_dispatch_to_the_gpu_pool(tmp_path, mirror):
    out = run_part(tmp_path, mirror, "operations", timeout=560)
    tails = json.dumps(out.get("log_tails", {}))[-6000:]

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
