"""Typed flow parameters: the Prefect UI renders them as a form (profiles and arms as drop-downs)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from alignx.config import PipelineConfig
from alignx.profiles import available_profiles, load_profile
from alignx.stages_and_arms import ARMS, STAGE1_ARMS, STAGE2_ARMS, STAGES

Profile = Literal[tuple(available_profiles())]  # type: ignore[valid-type]
Arm = Literal[ARMS]  # type: ignore[valid-type]
Stage = Literal[STAGES]  # type: ignore[valid-type]


class RunParams(BaseModel):
    """Which profile to run, with optional overrides (dotted keys, e.g. ``stage1.lambda_ctr``)."""

    model_config = ConfigDict(extra="forbid")

    profile: Profile = Field("demo", description="pipeline profile from data/profiles/")
    overrides: dict[str, Any] = Field(default_factory=dict, description="config overrides, dotted keys")

    def config(self) -> PipelineConfig:
        return load_profile(self.profile, self.overrides)


class PipelineParams(RunParams):
    """Parameters of the end-to-end pipeline flow."""

    arms: list[Arm] | None = Field(None, description="arms to train and evaluate; default: the profile's")
    stop_after: Stage | None = Field(None, description="stop after this stage")

    def config(self) -> PipelineConfig:
        overrides = dict(self.overrides)
        if self.arms is not None:
            overrides["arms"] = list(self.arms)
        return load_profile(self.profile, overrides)


class StageParams(RunParams):
    """Parameters of a single-stage flow; an arm picks which model line the stage belongs to."""

    arm: Arm = Field("alignx", description="which arm's model this stage trains or evaluates")


class Stage1Params(StageParams):
    """Stage 1 trains AlignX or its control; the form offers only those."""

    arm: Literal[STAGE1_ARMS] = Field(  # type: ignore[valid-type]
        "alignx", description="AlignX, or the control (both lambdas 0)")


class Stage2Params(StageParams):
    """Stage 2 trains every arm but base (sft starts from base); the form offers only those."""

    arm: Literal[STAGE2_ARMS] = Field(  # type: ignore[valid-type]
        "alignx", description="which arm's stage 2 to train")


def flow_run_name(flow: str) -> Callable[[], str]:
    """A flow's run name in the UI: flow, profile, arm (or evaluation name) and start time.

    ``pipeline-real-20261130-0142``, ``stage1-smoke-control-20261130-0150``: the runs list shows what
    each run trained without opening it (Prefect's default names are random words).
    """

    def name() -> str:
        from prefect.runtime import flow_run

        given = flow_run.parameters or {}
        params = given.get("params") or {}
        if isinstance(params, BaseModel):
            params = params.model_dump()
        parts = [flow, str(params.get("profile") or RunParams.model_fields["profile"].default)]
        label = given.get("name") or params.get("arm")
        if label:
            parts.append(str(label))
        return "-".join([*parts, datetime.now().strftime("%Y%m%d-%H%M%S")])

    return name
