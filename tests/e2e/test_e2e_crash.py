"""End to end on a real Prefect server (PostgreSQL) with a process worker: ``kill -9`` of a deployment run in
stage 1 after a checkpoint, then Retry: the dead attempt's lock is broken, it is marked Crashed, and the
retry resumes at the checkpoint (the driver's ``crash`` part)."""

from __future__ import annotations

import json

import pytest

from tests.e2e.driver import run_part

pytestmark = pytest.mark.e2e


def test_killed_run_resumes_at_its_checkpoint_on_retry(tmp_path, mirror):
    out = run_part(tmp_path, mirror, "crash", timeout=560)
    tails = json.dumps(out.get("log_tails", {}))[-6000:]
    # the server kept its state in PostgreSQL (a private cluster the driver started), not SQLite
    assert out["database"].get("flow_runs", 0) >= 1 and out["database"]["version"], out["database"]

    crash = out["crash"]  # kill -9 of a pipeline run in stage 1 after a checkpoint, then Retry
    assert crash["killed"] == 1 and crash["locks_after_kill"] >= 1, crash
    assert crash["killed_state"] == "CRASHED", crash
    assert crash["retry_state"] == "COMPLETED", (crash, tails)
    assert crash["dead_attempt_states"] == ["CRASHED"], crash
    # the retry ended every task run the dead attempt left Running (their gpu slots freed at once)
    assert crash["dead_attempt_left_running"] == [], crash
    assert len(crash["resumed_from"]) == 1 and crash["resumed_from"][0] >= 5, crash
