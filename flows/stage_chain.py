"""The stage chain shared by the pipeline flow and the single-stage flows.

Each function calls cached tasks and verifies what they return, so a stage rerun alone finds its
upstream artefacts as cache hits. With ``dispatch: deployments`` heavy stages run as child flow runs
of their own deployments (on the GPU pool) and their artefact records come back through the run root.
The arms are independent: each arm's chain is one ``arm-chain`` task, and ``run_bounded`` runs them as
Prefect futures, ``parallel_stages`` at a time.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.deployments import run_deployment
from prefect.exceptions import MissingContextError
from prefect.futures import wait
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.transactions import CommitMode, transaction
from pydantic import BaseModel

from alignx.artefacts import Artefact, atomic_write_text, verify_artefact
from alignx.config import PipelineConfig
from alignx.data import data_stages
from alignx.stages_and_arms import STAGES
from tasks import data as data_tasks
from tasks import evaluate as eval_tasks
from tasks import fingerprints
from tasks import train as train_tasks
from tasks.caching import cached_artefact, run_verified
from tasks.retries import NO_RETRY

# Each stage a pipeline can dispatch, by its deployment in prefect.yaml (``<flow name>/alignx-<stage>``).
STAGE_DEPLOYMENTS = {stage: f"{stage}/alignx-{stage}" for stage in STAGES if stage != "data"}


def run_data(cfg: PipelineConfig) -> Artefact:
    """collect (one task per source, concurrently) -> language-ID filter -> shards."""
    source_fps = {src: fingerprints.source(src, cfg) for src in cfg.data.sources}
    futures = [data_tasks.collect.submit(src, fp, cfg) for src, fp in source_fps.items()]
    raw = [f.result() for f in futures]
    for i, (src, fp) in enumerate(source_fps.items()):
        if not verify_artefact(raw[i]):
            raw[i] = run_verified(data_tasks.collect, src, fp, cfg)
    filtered = run_verified(data_tasks.langid_filter, raw, cfg)
    shards = run_verified(data_tasks.shard, filtered, cfg)
    rows = data_stages.summary_table(filtered)
    create_table_artifact(rows, key="data-counts", description="pairs in, kept and rejected per reason, per language pair")
    for warning in filtered.meta.get("warnings", []):
        get_run_logger().warning("data: %s", warning)
    return shards


def run_base(cfg: PipelineConfig, shards: Artefact) -> Artefact:
    """The profile's base model (prepared from a catalogue name, GGUF, directory or hub id), else bootstrap.

    Stops first when a language pair kept no pairs (naming it and its rejection counts): every
    training stage after this point would fail on it, or silently train without the language.
    """
    if shards.meta.get("filtered"):
        data_stages.check_pairs_kept(shards.meta["filtered"])
    if cfg.base_model:
        source_fp = fingerprints.base_model(cfg.base_model)
        return run_verified(train_tasks.prepare_base, source_fp, cfg)
    return dispatch_or_run(cfg, "bootstrap", {"shards": shards}, (train_tasks.bootstrap, (shards, cfg), {}))


def run_stage1(cfg: PipelineConfig, base: Artefact, shards: Artefact, arm: str) -> Artefact:
    control = arm == "control"
    stage_cfg = cfg.for_control() if control else cfg  # one control across a sweep of the loss weights
    return dispatch_or_run(cfg, "stage1", {"base": base, "shards": shards},
                           (train_tasks.stage1, (base, shards, stage_cfg), {"control": control}), arm=arm)


def run_stage2(cfg: PipelineConfig, start: Artefact, shards: Artefact, arm: str) -> Artefact:
    return dispatch_or_run(cfg, "stage2", {"model": start, "shards": shards},
                           (train_tasks.stage2, (start, shards, cfg, arm), {}), arm=arm)


def run_evaluate(cfg: PipelineConfig, model: Artefact, name: str) -> Artefact:
    bench_fp = fingerprints.benchmarks(cfg)
    return dispatch_or_run(cfg, "evaluate", {"model": model}, (eval_tasks.evaluate, (model, bench_fp, cfg, name), {}),
                           arm=name.split("-")[0], name=name)


def train_arm(cfg: PipelineConfig, arm: str, base: Artefact, shards: Artefact) -> dict[str, Artefact]:
    """The checkpoints of one arm: base -> (stage 1) -> stage 2."""
    if arm == "base":
        return {"final": base}
    if arm == "sft":
        return {"final": run_stage2(cfg, base, shards, "sft")}
    s1 = run_stage1(cfg, base, shards, arm)
    if not cfg.stage2.enabled:
        return {"stage1": s1, "final": s1}
    return {"stage1": s1, "final": run_stage2(cfg, s1, shards, arm)}


def evaluate_arm(cfg: PipelineConfig, arm: str, models: dict[str, Artefact]) -> dict[str, Artefact]:
    """Evaluations of one arm: its final checkpoint, and its stage-1 one when ``eval.include_stage1``."""
    evals = {arm: run_evaluate(cfg, models["final"], arm)}
    if "stage1" in models and cfg.eval.include_stage1 and models["stage1"] is not models["final"]:
        evals[f"{arm}-stage1"] = run_evaluate(cfg, models["stage1"], f"{arm}-stage1")
    return evals


# ---------------------------------------------------------------- arms run concurrently
class ArmRun(BaseModel):
    """What one arm's chain produced: its checkpoints by stage, and its evaluations by name."""

    models: dict[str, Artefact]
    evals: dict[str, Artefact] = {}


# No tags and no cache of its own: the stages it calls carry the ``gpu`` tag and their own cache keys,
# so a slot is held only while a stage trains or evaluates, and a rerun re-verifies every artefact.
@task(name="arm-chain", task_run_name="arm-chain-{arm}", cache_policy=NO_CACHE, **NO_RETRY)
def arm_chain(cfg: PipelineConfig, arm: str, base: Artefact, shards: Artefact, through: str) -> ArmRun:
    """One arm's stages in order, up to ``through`` (stage1, stage2 or evaluate): train, then evaluate."""
    # A task called from a task joins its caller's transaction and is committed (cached) only with it:
    # an eager transaction commits each stage as it completes, so a failed evaluation never rolls
    # back the training before it, and a retry finds those stages cached.
    with transaction(commit_mode=CommitMode.EAGER):
        if through == "stage1":
            return ArmRun(models={"stage1": run_stage1(cfg, base, shards, arm)})
        models = train_arm(cfg, arm, base, shards)
        if through != "evaluate":
            return ArmRun(models=models)
        return ArmRun(models=models, evals=evaluate_arm(cfg, arm, models))


def run_arm_chains(cfg: PipelineConfig, arms: list[str], base: Artefact, shards: Artefact,
                   through: str) -> dict[str, ArmRun]:
    """Every arm's chain, ``cfg.parallel_stages`` at a time; results by arm, in the order given."""
    calls = [{"cfg": cfg, "arm": arm, "base": base, "shards": shards, "through": through} for arm in arms]
    return dict(zip(arms, run_bounded(arm_chain, calls, cfg.parallel_stages)))


def run_bounded(task_: Task[..., Any], calls: list[dict[str, Any]], limit: int) -> list[Any]:
    """Run ``task_`` once per parameter dict as Prefect futures, at most ``limit`` at once; results in order.

    ``limit`` only caps this flow's own threads: the ``gpu`` tag concurrency limit (``alignx deploy``)
    and, under ``dispatch: deployments``, the GPU pool's workers bound the stages across every run.
    Every call runs to its end even when another fails, so one failed evaluation does not abandon
    another arm's training; then the first failure (in ``calls`` order) is raised.
    A stop (SIGTERM, Ctrl-C) does not wait for the calls still running: the runner's pool is let go
    without joining its threads and the stop goes on up at once, so the flow run is recorded as crashed
    and the command ends the process (leaving the runner's context would join threads still training).
    """
    runner = ThreadPoolTaskRunner(max_workers=limit)
    with runner:
        try:
            futures = [runner.submit(task_, params) for params in calls]
            wait(futures)
            return [future.result() for future in futures]
        except BaseException as exc:
            executor = getattr(runner, "_executor", None)  # the pool that the runner's exit would join
            if not isinstance(exc, Exception) and executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
                runner._executor = None
            raise


# ---------------------------------------------------------------- dispatch to deployments
def dispatch_or_run(cfg: PipelineConfig, stage: str, inputs: dict[str, Artefact],
                    call: tuple[Task[..., Artefact], tuple[Any, ...], dict[str, Any]], arm: str = "alignx",
                    name: str | None = None) -> Artefact:
    """Run a stage's cached task here (``call``: the task and its arguments), or as a child run of its
    deployment. A stage whose task has a verified cache entry for the same arguments is not dispatched:
    the child would only find that entry, after a process start and a wait on the GPU pool."""
    task_, args, kwargs = call
    if cfg.dispatch == "local":
        return run_verified(task_, *args, **kwargs)
    cached = cached_artefact(task_, *args, **kwargs)
    if cached is not None:
        _log("%s %s: cached at %s, not dispatched", stage, name or arm, cached.path)
        return cached
    return dispatch_stage(stage, cfg, inputs, arm, name)


@task(name="dispatch-stage", **NO_RETRY)
def dispatch_stage(stage: str, cfg: PipelineConfig, inputs: dict[str, Artefact], arm: str,
                   name: str | None = None) -> Artefact:
    """Run a stage as a child run of its deployment and return its artefact; fail with the child's message.

    ``arm`` is the model line (base, sft, control, alignx); ``name`` labels an evaluation of a checkpoint
    that is not the arm's final one (``alignx-stage1``).
    """
    params: dict[str, Any] = {
        "params": {"profile": cfg.name, "overrides": cfg.model_dump(mode="json", exclude={"name"}),
                   **({"arm": arm} if stage != "bootstrap" else {})},  # bootstrap: no arm
        "inputs": {k: v.model_dump(mode="json") for k, v in inputs.items()},
    }
    if name is not None:
        params["name"] = name
    run = run_deployment(STAGE_DEPLOYMENTS[stage], parameters=params, timeout=None)
    if run.state is None or not run.state.is_completed():
        state = run.state.name if run.state else "unknown"
        message = run.state.message if run.state else ""
        raise RuntimeError(f"stage {stage!r} (child flow run {run.name}) ended {state}: {message}")
    record_file = result_record_path(cfg, str(run.id))
    if not record_file.is_file():
        raise RuntimeError(f"stage {stage!r} completed but wrote no result record at {record_file}")
    record = Artefact.model_validate_json(record_file.read_text(encoding="utf-8"))
    if not verify_artefact(record):
        raise RuntimeError(f"stage {stage!r} artefact at {record.path} is missing or fails verification")
    return record


def _log(message: str, *args: Any) -> None:
    try:
        get_run_logger().info(message, *args)
    except MissingContextError:  # called outside a flow run (a script, a test)
        logging.getLogger(__name__).info(message, *args)


def result_record_path(cfg: PipelineConfig, flow_run_id: str) -> Path:
    return cfg.resolved_run_root() / "runs" / f"{flow_run_id}.json"


def publish_result(cfg: PipelineConfig, record: Artefact, stage: str, arm: str | None = None) -> None:
    """Write a stage flow's result where a dispatching parent finds it (shared run root), and show it in
    the UI: a ``<stage>-<arm>-output`` artifact says where the checkpoint (or shards, or metrics) went."""
    from prefect.runtime import flow_run

    if not flow_run.id:
        return
    atomic_write_text(result_record_path(cfg, str(flow_run.id)), record.model_dump_json(indent=2))
    label = f"{stage}-{arm}" if arm else stage
    rows = [{"field": "path", "value": record.path}, {"field": "kind", "value": record.kind},
            {"field": "fingerprint", "value": record.fingerprint}, {"field": "profile", "value": cfg.name}]
    rows += [{"field": k, "value": str(v)} for k, v in sorted(record.meta.items())
             if isinstance(v, (str, int, float, bool)) and len(str(v)) < 200]
    create_table_artifact(rows, key=f"{label}-output".replace("_", "-").lower(),
                          description=f"where {label}'s output ({record.kind}) went: {record.path}")


def load_inputs(inputs: dict[str, Any] | None) -> dict[str, Artefact]:
    return {k: Artefact.model_validate(v) for k, v in (inputs or {}).items()}


def curves_of(models: dict[str, dict[str, Artefact]]) -> dict[str, str]:
    """Training-curve files of every trained checkpoint, by arm and stage."""
    out = {}
    for arm, stages in models.items():
        for stage, record in stages.items():
            log = Path(record.path) / "train_log.jsonl"
            if log.is_file() and not (arm == "base" and stage == "final" and record.meta.get("source") == "given"):
                label = arm if stage == "final" else f"{arm}-{stage}"
                out[label] = str(log)
    return out


def as_json(record: Artefact) -> dict[str, Any]:
    return json.loads(record.model_dump_json())
