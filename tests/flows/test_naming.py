"""What the UI shows: run names that say profile and arm, and stage forms offering only valid arms."""

from __future__ import annotations

import json

import pytest
from prefect import flow
from pydantic import ValidationError

from flows import stages
from flows.params import Stage1Params, Stage2Params, StageParams, flow_run_name


def _arm_choices(flow_obj) -> list[str]:
    """The arm drop-down the UI renders from the flow's parameter schema."""
    schema = json.loads(json.dumps(flow_obj.parameters.model_dump(mode="json")))
    params_ref = schema["properties"]["params"]
    ref = (params_ref.get("$ref") or params_ref["allOf"][0]["$ref"]).rsplit("/", 1)[-1]
    return schema["definitions"][ref]["properties"]["arm"]["enum"]


def test_stage_forms_offer_only_the_arms_each_stage_accepts():
    assert _arm_choices(stages.stage1_flow) == ["control", "alignx"]
    assert _arm_choices(stages.stage2_flow) == ["sft", "control", "alignx"]
    assert _arm_choices(stages.evaluate_flow) == ["base", "sft", "control", "alignx"]
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
