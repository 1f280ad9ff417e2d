"""Typed flow parameters: the Prefect UI renders them as a form (profiles and arms as drop-downs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from alignx.config import PipelineConfig, available_profiles, load_profile

Profile = Literal[tuple(available_profiles())]  # type: ignore[valid-type]
Arm = Literal["base", "sft", "control", "alignx"]
Stage = Literal["data", "bootstrap", "stage1", "stage2", "evaluate"]


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
