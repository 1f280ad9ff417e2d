"""What the UI shows: run names that say profile and arm, and stage forms offering only valid arms."""

from __future__ import annotations

import json

import pytest
from prefect import flow
from pydantic import ValidationError

from flows import stage_flows
from flows.params import Stage1Params, Stage2Params, StageParams, flow_run_name


def _arm_choices(flow_obj) -> list[str]:
    """The arm drop-down the UI renders from the flow's parameter schema."""
    schema = json.loads(json.dumps(flow_obj.parameters.model_dump(mode="json")))
    params_ref = schema["properties"]["params"]
    ref = (params_ref.get("$ref") or params_ref["allOf"][0]["$ref"]).rsplit("/", 1)[-1]
    return schema["definitions"][ref]["properties"]["arm"]["enum"]


def test_stage_forms_offer_only_the_arms_each_stage_accepts():
    assert _arm_choices(stage_flows.stage1_flow) == ["control", "alignx"]
    assert _arm_choices(stage_flows.stage2_flow) == ["sft", "control", "alignx"]
    assert _arm_choices(stage_flows.evaluate_flow) == ["base", "sft", "control", "alignx"]
    with pytest.raises(ValidationError):
        Stage1Params(arm="sft")
    with pytest.raises(ValidationError):
        Stage2Params(arm="base")


def test_flow_runs_are_named_by_flow_profile_and_arm():
    from prefect.runtime import flow_run

    @flow(flow_run_name=flow_run_name("stage1"))
    def named(params: StageParams = StageParams()) -> str:
        return flow_run.name

    @flow(flow_run_name=flow_run_name("evaluate"))
    def named_eval(params: StageParams = StageParams(), name: str | None = None) -> str:
        return flow_run.name

    assert named(StageParams(profile="smoke", arm="control")).startswith("stage1-smoke-control-")
    assert named().startswith("stage1-demo-alignx-")  # defaults: the form's
    assert named_eval(StageParams(profile="smoke", arm="alignx"), name="alignx-stage1").startswith(
        "evaluate-smoke-alignx-stage1-")


def test_every_deployment_entrypoint_is_a_flow_and_every_dispatched_stage_has_one():
    """prefect.yaml names files and functions by hand: each entrypoint must be a flow, and every stage a
    pipeline dispatches (``STAGE_DEPLOYMENTS``, ``<flow name>/<deployment name>``) must be deployed."""
    import importlib
    from pathlib import Path

    import yaml
    from prefect import Flow

    from flows.stage_chain import STAGE_DEPLOYMENTS

    repo = Path(__file__).resolve().parents[2]
    deployments = yaml.safe_load((repo / "prefect.yaml").read_text(encoding="utf-8"))["deployments"]
    flow_of = {}
    for deployment in deployments:
        path, _, name = deployment["entrypoint"].partition(":")
        found = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name, None)
        assert isinstance(found, Flow), f"{deployment['name']}: {deployment['entrypoint']} is not a flow"
        flow_of[deployment["name"]] = found.name
    for stage, target in STAGE_DEPLOYMENTS.items():
        flow_name, _, deployment_name = target.partition("/")
        assert flow_of.get(deployment_name) == flow_name, (stage, target, flow_of)
