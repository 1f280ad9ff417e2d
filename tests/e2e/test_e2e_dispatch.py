"""End to end on a real Prefect server (PostgreSQL) with a worker on each pool, each with its own Prefect home
and one shared result storage: the pipeline runs its heavy stages as child runs of their deployments on the
GPU pool, and a child that fails fails the parent with its message (the driver's ``dispatch`` part)."""

from __future__ import annotations

import json

import pytest

from tests.e2e.driver import run_part

pytestmark = pytest.mark.e2e


def test_stages_dispatch_to_the_gpu_pool_and_a_failing_child_fails_the_parent(tmp_path, mirror):
    out = run_part(tmp_path, mirror, "dispatch", timeout=560)
    tails = json.dumps(out.get("log_tails", {}))[-6000:]
    # the server kept its state in PostgreSQL (a private cluster the driver started), not SQLite
    assert out["database"].get("flow_runs", 0) >= 1 and out["database"]["version"], out["database"]

    dispatch = out["dispatch"]  # dispatch: deployments, children on the GPU pool's worker
    assert dispatch["state"] == "COMPLETED", (dispatch, tails)
    kids = dispatch["children"]
    for name in ("stage1-smoke-alignx", "stage2-smoke-alignx", "evaluate-smoke-alignx", "evaluate-smoke-alignx-stage1"):
        assert f"{name}@alignx-gpu:COMPLETED" in kids, (name, kids)
    assert dispatch["failing_state"] == "FAILED", dispatch
    assert "stage 'stage1'" in dispatch["failing_message"] and "max_length=8" in dispatch["failing_message"], dispatch
    # only the stage whose key changed goes to the GPU pool: the bootstrap, cached under the same key,
    # is read by the parent (it went to the pool in the first run)
    assert any(k.startswith("bootstrap-") for k in kids), kids
    assert dispatch["failing_children"] == ["stage1-smoke-alignx:FAILED"], dispatch
