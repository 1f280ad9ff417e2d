"""Dispatch to deployments: what the pipeline sends each stage flow is valid for it, and a failed child fails the parent.

``run_deployment`` is replaced by a recorder (no workers here); the parameters it receives are
validated against the target flow's own signature, which is what the server does for a real run.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from alignx.artefacts import Artefact, atomic_dir, write_marker
from alignx.profiles import load_profile
from flows import stage_chain, stage_flows

pytestmark = pytest.mark.usefixtures("prefect_api")

FLOWS = {"stage1": stage_flows.stage1_flow, "stage2": stage_flows.stage2_flow, "evaluate": stage_flows.evaluate_flow,
         "bootstrap": stage_flows.bootstrap_flow}


def _artefact(path: Path) -> Artefact:
    with atomic_dir(path) as tmp:
        (tmp / "weights.bin").write_bytes(b"w")
    return write_marker(path, "model")


@pytest.fixture()
def recorder(monkeypatch, tmp_path):
    sent: list[tuple[str, dict]] = []
    outcome = {"state": "Completed", "message": ""}

    def fake_run_deployment(name: str, parameters: dict, timeout=None):
        sent.append((name, parameters))
        run_id = uuid.uuid4()
        state = SimpleNamespace(name=outcome["state"], message=outcome["message"],
                                is_completed=lambda: outcome["state"] == "Completed")
        if outcome["state"] == "Completed":
            cfg = load_profile("smoke", {"run_root": str(tmp_path / "run")})
            record = _artefact(tmp_path / f"out-{len(sent)}")
            stage_chain.result_record_path(cfg, str(run_id)).parent.mkdir(parents=True, exist_ok=True)
            stage_chain.result_record_path(cfg, str(run_id)).write_text(record.model_dump_json())
        return SimpleNamespace(id=run_id, name=f"child-{len(sent)}", state=state)

    monkeypatch.setattr(stage_chain, "run_deployment", fake_run_deployment)
    return sent, outcome


def test_every_dispatched_stage_gets_parameters_its_flow_accepts(recorder, tmp_path):
    sent, _ = recorder
    cfg = load_profile("smoke", {"run_root": str(tmp_path / "run"), "dispatch": "deployments",
                                 "eval.include_stage1": True})
    base, shards = _artefact(tmp_path / "base"), _artefact(tmp_path / "shards")
    for arm in ("control", "alignx"):
        s1 = stage_chain.run_stage1(cfg, base, shards, arm)
        stage_chain.run_stage2(cfg, s1, shards, arm)
        stage_chain.run_evaluate(cfg, s1, f"{arm}-stage1")
    stage_chain.run_evaluate(cfg, base, "base")
    assert [n for n, _ in sent].count(stage_chain.STAGE_DEPLOYMENTS["evaluate"]) == 3
    for name, parameters in sent:
        stage = next(s for s, d in stage_chain.STAGE_DEPLOYMENTS.items() if d == name)
        FLOWS[stage].validate_parameters(parameters)  # raises on a parameter the flow rejects
    evaluations = [p for n, p in sent if n == stage_chain.STAGE_DEPLOYMENTS["evaluate"]]
    assert [p.get("name") for p in evaluations] == ["control-stage1", "alignx-stage1", "base"]
    assert [p["params"]["arm"] for p in evaluations] == ["control", "alignx", "base"]


def test_failed_child_fails_the_parent_with_its_message(recorder, tmp_path):
    _, outcome = recorder
    outcome.update(state="Failed", message="stage 1 ran out of memory twice")
    cfg = load_profile("smoke", {"run_root": str(tmp_path / "run"), "dispatch": "deployments"})
    base, shards = _artefact(tmp_path / "base"), _artefact(tmp_path / "shards")
    with pytest.raises(RuntimeError, match="ended Failed: stage 1 ran out of memory twice"):
        stage_chain.run_stage1(cfg, base, shards, "alignx")


def test_published_result_is_what_the_parent_reads(tmp_path):
    from prefect import flow

    cfg = load_profile("smoke", {"run_root": str(tmp_path / "run")})
    record = _artefact(tmp_path / "model")

    @flow
    def child() -> str:
        from prefect.runtime import flow_run

        stage_chain.publish_result(cfg, record, "stage1", "control")
        return str(flow_run.id)

    run_id = child()
    written = Artefact.model_validate_json(stage_chain.result_record_path(cfg, run_id).read_text())
    assert written == record
    # the UI shows where the single stage's checkpoint went
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["stage1-control-output"]), flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    assert len(artifacts) == 1
    assert {"field": "path", "value": record.path} in json.loads(artifacts[0].data)


def test_a_stage_cached_under_what_the_child_would_be_sent_is_not_dispatched(recorder, tmp_path):
    """The parent computes the key the child's task would compute from the parameters it is sent; a
    verified entry under that key is returned without a child run, anything else is dispatched."""
    import shutil

    from prefect.results import get_result_store

    from flows.params import Stage1Params
    from tasks import train as train_tasks
    from tasks.caching import task_key

    sent, _ = recorder
    cfg = load_profile("smoke", {"run_root": str(tmp_path / "run"), "dispatch": "deployments"})
    base, shards = _artefact(tmp_path / "base"), _artefact(tmp_path / "shards")
    first = stage_chain.run_stage1(cfg, base, shards, "alignx")
    assert len(sent) == 1  # nothing cached yet

    # what the child does with what it was sent: its own config (dispatch local), its inputs, its task's key
    name, parameters = sent[0]
    child_cfg = Stage1Params(**parameters["params"]).config().model_copy(update={"dispatch": "local"})
    inputs = stage_chain.load_inputs(parameters["inputs"])
    key = task_key(train_tasks.stage1, {"base": inputs["base"], "shards": inputs["shards"], "cfg": child_cfg,
                                        "control": False})
    get_result_store().update_for_task(train_tasks.stage1).write(obj=first, key=key)

    assert stage_chain.run_stage1(cfg, base, shards, "alignx") == first
    assert len(sent) == 1  # the cache hit was read in the parent: no child run
    stage_chain.run_stage1(cfg, base, shards, "control")  # another key (the control's config)
    assert len(sent) == 2
    changed = cfg.model_copy(update={"stage1": cfg.stage1.model_copy(update={"lambda_ctr": 2.0})})
    stage_chain.run_stage1(changed, base, shards, "alignx")  # another key (a stage-1 setting)
    assert len(sent) == 3
    shutil.rmtree(first.path)  # the entry's checkpoint is gone: the child runs (and rebuilds it)
    stage_chain.run_stage1(cfg, base, shards, "alignx")
    assert len(sent) == 4
