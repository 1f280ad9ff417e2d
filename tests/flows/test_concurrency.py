"""The pipeline runs independent arms concurrently, bounded by ``parallel_stages`` and the ``gpu`` tag limit.

The real pipeline flow and its arm-chain submission run; the data, base model and training stages
are stand-ins (gpu-tagged tasks that sleep and write a small artefact), so timing is what is tested.
Overlap is read back from the Prefect API: the start and end times of the flow run's task runs.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from prefect import task
from prefect.cache_policies import NO_CACHE

from alignx.artefacts import Artefact, atomic_dir, write_marker
from flows import stage_chain
from tasks import train as train_tasks

pytestmark = pytest.mark.usefixtures("prefect_api")

STAGE_SECONDS = 1.0
NO_LIMITS_CACHE_S = 6  # Prefect's client remembers for 5 s that a set of tags has no concurrency limit
ARMS = ["sft", "control", "alignx"]  # five training stages: sft's stage 2, two chains of stage 1 -> stage 2


def _artefact(path: Path) -> Artefact:
    with atomic_dir(path) as tmp:
        (tmp / "weights.bin").write_bytes(uuid.uuid4().bytes)
    return write_marker(path, "model")


@pytest.fixture()
def stand_ins(monkeypatch, tmp_path):
    """Replace data, base and the training stages by quick stand-ins with the stages' names and tag."""
    out = tmp_path / "models"

    @task(name="stage1", tags=["gpu"], cache_policy=NO_CACHE)
    def stage1(base: Artefact, shards: Artefact, cfg, control: bool = False) -> Artefact:
        time.sleep(STAGE_SECONDS)
        return _artefact(out / f"stage1-{uuid.uuid4().hex}")

    @task(name="stage2", tags=["gpu"], cache_policy=NO_CACHE)
    def stage2(model: Artefact, shards: Artefact, cfg, arm: str) -> Artefact:
        time.sleep(STAGE_SECONDS)
        return _artefact(out / f"stage2-{uuid.uuid4().hex}")

    monkeypatch.setattr(stage_chain, "run_data", lambda cfg: _artefact(tmp_path / "shards"))
    monkeypatch.setattr(stage_chain, "run_base", lambda cfg, shards: _artefact(tmp_path / "base"))
    monkeypatch.setattr(train_tasks, "stage1", stage1)
    monkeypatch.setattr(train_tasks, "stage2", stage2)
    return tmp_path


def _run_pipeline(root: Path, parallel_stages: int) -> list[tuple[float, float]]:
    """Run the pipeline through stage 2; return the (start, end) times of its training task runs, by start."""
    from flows.params import PipelineParams
    from flows.pipeline import pipeline

    params = PipelineParams(profile="smoke", arms=ARMS, stop_after="stage2",
                            overrides={"run_root": str(root / "run"), "parallel_stages": parallel_stages})
    state = pipeline(params, return_state=True)
    assert state.is_completed(), state.message
    assert set(state.result()["models"]) == set(ARMS)
    return _training_intervals(state.state_details.flow_run_id)


def _training_intervals(flow_run_id) -> list[tuple[float, float]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 20  # task-run states reach the API as events: allow them to land
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            training = [r for r in runs if r.name.rsplit("-", 1)[0] in ("stage1", "stage2")]
            if len(training) == 5 and all(r.start_time and r.end_time for r in training):
                break
            assert time.monotonic() < deadline, [(r.name, r.start_time, r.end_time) for r in training]
            time.sleep(0.5)
    return sorted((r.start_time.timestamp(), r.end_time.timestamp()) for r in training)


def _overlapping_pairs(intervals: list[tuple[float, float]]) -> int:
    return sum(1 for i, (s1, e1) in enumerate(intervals) for s2, e2 in intervals[i + 1:] if s2 < e1 and s1 < e2)


def test_two_slots_overlap_training_one_slot_runs_one_at_a_time(stand_ins):
    two = _run_pipeline(stand_ins / "two", parallel_stages=2)
    assert _overlapping_pairs(two) >= 1, two
    one = _run_pipeline(stand_ins / "one", parallel_stages=1)
    assert _overlapping_pairs(one) == 0, one
    assert (two[-1][1] - two[0][0]) < (one[-1][1] - one[0][0])


def test_gpu_tag_limit_bounds_concurrent_chains(stand_ins):
    """Three free chain slots, one ``gpu`` slot (what ``alignx deploy --gpu-slots 1`` creates): one stage at a time."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag="gpu", concurrency_limit=1)
        time.sleep(NO_LIMITS_CACHE_S)  # earlier gpu tasks in this process cached "gpu has no limit"
        try:
            intervals = _run_pipeline(stand_ins / "gpu", parallel_stages=3)
        finally:
            client.delete_concurrency_limit_by_tag("gpu")
    assert _overlapping_pairs(intervals) == 0, intervals


def test_failed_stage_keeps_the_stages_before_it_cached(monkeypatch, tmp_path):
    """Stages run inside an arm-chain task: a failing stage 2 must not roll back (un-cache) stage 1."""
    from flows.params import PipelineParams
    from flows.pipeline import pipeline
    from tests.flows.conftest import task_states

    run_id, broken = uuid.uuid4().hex, {"stage2": True}

    @task(name="stage1", tags=["gpu"], persist_result=True, cache_key_fn=lambda ctx, params: f"stand-in-stage1-{run_id}")
    def stage1(base: Artefact, shards: Artefact, cfg, control: bool = False) -> Artefact:
        return _artefact(tmp_path / "stage1")

    @task(name="stage2", tags=["gpu"], cache_policy=NO_CACHE)
    def stage2(model: Artefact, shards: Artefact, cfg, arm: str) -> Artefact:
        if broken["stage2"]:
            raise ValueError("stage 2 input is bad")
        return _artefact(tmp_path / "stage2")

    monkeypatch.setattr(stage_chain, "run_data", lambda cfg: _artefact(tmp_path / "shards"))
    monkeypatch.setattr(stage_chain, "run_base", lambda cfg, shards: _artefact(tmp_path / "base"))
    monkeypatch.setattr(train_tasks, "stage1", stage1)
    monkeypatch.setattr(train_tasks, "stage2", stage2)
    params = PipelineParams(profile="smoke", arms=["alignx"], stop_after="stage2",
                            overrides={"run_root": str(tmp_path / "run")})

    failed = pipeline(params, return_state=True)
    assert failed.is_failed()
    assert task_states(failed)["stage1"] == ["Completed"], task_states(failed)
    broken["stage2"] = False
    repaired = pipeline(params, return_state=True)
    assert repaired.is_completed(), repaired.message
    assert task_states(repaired)["stage1"] == ["Cached"], task_states(repaired)
