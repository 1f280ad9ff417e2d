"""Fixtures for flow tests: a private copy of the mirror slices a test may corrupt, and task-state lookup."""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from pathlib import Path

import pytest


def copy_mirror(mirror: Path, dest: Path, tatoeba_pairs: list[str], extra: list[str]) -> Path:
    """Copy the named Tatoeba pair folders and other sets of the mirror (never modify ../shared)."""
    for pair in tatoeba_pairs:
        shutil.copytree(mirror / "tatoeba" / pair, dest / "tatoeba" / pair)
    for name in extra:
        shutil.copytree(mirror / name, dest / name)
    return dest


def task_states(flow_state) -> dict[str, list[str]]:
    """Final state names of every stage's task runs of a flow run, by task name (e.g. {'collect': ['Cached']}).

    The never-cached bookkeeping tasks (input fingerprints, the preflight) are left out."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run_id = flow_state.state_details.flow_run_id
    # task runs and their states reach the API through events, a moment after the flow returns: read
    # until every run is final and the count has held still for a second (at most 60 s)
    runs, stable_since, deadline = [], None, time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            now = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            settled = all(r.state is not None and r.state.is_final() for r in now)
            if len(now) != len(runs) or not settled:
                runs, stable_since = now, None
            elif stable_since is None:
                stable_since = time.monotonic()
            elif time.monotonic() - stable_since >= 1.0:
                break
            time.sleep(0.25)
    out: dict[str, list[str]] = defaultdict(list)
    for run in runs:
        name = run.name.rsplit("-", 1)[0]
        if name.startswith(("fingerprint", "preflight")):
            continue
        out[name].append(run.state.name if run.state else "?")
    return dict(out)


@pytest.fixture()
def states():
    return task_states
