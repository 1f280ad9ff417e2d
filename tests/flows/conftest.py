"""Fixtures for flow tests: a private copy of the mirror slices a test may corrupt, and task-state lookup."""

from __future__ import annotations

import shutil
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
    """Final state names of every task run of a flow run, by task name (e.g. {'collect': ['Cached']})."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run_id = flow_state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    out: dict[str, list[str]] = defaultdict(list)
    for run in runs:
        name = run.name.rsplit("-", 1)[0]
        out[name].append(run.state.name if run.state else "?")
    return dict(out)


@pytest.fixture()
def states():
    return task_states
