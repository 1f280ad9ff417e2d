"""One flow per stage, each its own deployment so a single stage can be (re)run from the UI.

A stage flow takes the previous stages' artefact records as ``inputs`` when a dispatching pipeline
passes them; triggered alone, it finds them through the cached upstream tasks.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from alignx.artefacts import Artefact
from flows import stage_chain
from flows.attempts import end_earlier_attempts
from flows.params import RunParams, Stage1Params, Stage2Params, StageParams, flow_run_name


def _upstream(params: RunParams, inputs: dict[str, Any] | None, need: tuple[str, ...]) -> tuple[Any, dict[str, Artefact]]:
    end_earlier_attempts()  # first, before any task of this attempt
    cfg = params.config()
    got = stage_chain.load_inputs(inputs)
    if "shards" in need and "shards" not in got:
        got["shards"] = stage_chain.run_data(cfg.model_copy(update={"dispatch": "local"}))
    if "base" in need and "base" not in got:
        got["base"] = stage_chain.run_base(cfg.model_copy(update={"dispatch": "local"}), got["shards"])
    return cfg.model_copy(update={"dispatch": "local"}), got


@flow(name="data", flow_run_name=flow_run_name("data"), log_prints=False)
def data_flow(params: RunParams = RunParams()) -> dict[str, Any]:
    """collect -> language-ID filter -> Parquet shards."""
    end_earlier_attempts()
    cfg = params.config()
    record = stage_chain.run_data(cfg)
    stage_chain.publish_result(cfg, record, "data")
    return stage_chain.as_json(record)


@flow(name="bootstrap", flow_run_name=flow_run_name("bootstrap"))
def bootstrap_flow(params: RunParams = RunParams(), inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the offline base model on the shards (skipped when the profile names a base model)."""
    cfg, got = _upstream(params, inputs, ("shards",))
    record = stage_chain.run_base(cfg, got["shards"])
    stage_chain.publish_result(cfg, record, "base")
    return stage_chain.as_json(record)


@flow(name="stage1", flow_run_name=flow_run_name("stage1"))
def stage1_flow(params: Stage1Params = Stage1Params(), inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Stage-1 alignment pre-training of the AlignX arm (or the control arm: both lambdas 0)."""
    cfg, got = _upstream(params, inputs, ("shards", "base"))
    record = stage_chain.run_stage1(cfg, got["base"], got["shards"], params.arm)
    stage_chain.publish_result(cfg, record, "stage1", params.arm)
    return stage_chain.as_json(record)


@flow(name="stage2", flow_run_name=flow_run_name("stage2"))
def stage2_flow(params: Stage2Params = Stage2Params(), inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Stage-2 instruction tuning of an arm: from its stage-1 checkpoint, or from base for 'sft'."""
    cfg, got = _upstream(params, inputs, ("shards", "base") if "model" not in (inputs or {}) else ("shards",))
    start = got.get("model")
    if start is None:
        start = got["base"] if params.arm == "sft" else stage_chain.run_stage1(cfg, got["base"], got["shards"], params.arm)
    record = stage_chain.run_stage2(cfg, start, got["shards"], params.arm)
    stage_chain.publish_result(cfg, record, "stage2", params.arm)
    return stage_chain.as_json(record)


@flow(name="evaluate", flow_run_name=flow_run_name("evaluate"))
def evaluate_flow(params: StageParams = StageParams(), inputs: dict[str, Any] | None = None,
                  model_path: str | None = None, name: str | None = None) -> dict[str, Any]:
    """Evaluate one arm's final model, or any checkpoint directory given as ``model_path``.

    ``name`` labels the evaluation (default: the arm), e.g. ``alignx-stage1`` for a stage-1 checkpoint.
    """
    end_earlier_attempts()
    cfg = params.config().model_copy(update={"dispatch": "local"})
    got = stage_chain.load_inputs(inputs)
    if model_path:
        from alignx.artefacts import tree_fingerprint

        got["model"] = Artefact(kind="model", path=model_path, fingerprint=tree_fingerprint(model_path))
    if "model" not in got:
        cfg_up, up = _upstream(params, None, ("shards", "base"))
        got["model"] = stage_chain.train_arm(cfg_up, params.arm, up["base"], up["shards"])["final"]
    record = stage_chain.run_evaluate(cfg, got["model"], name or params.arm)
    stage_chain.publish_result(cfg, record, "evaluate", name or params.arm)
    return stage_chain.as_json(record)
