"""Experiment tracking: the training stages' curves in TensorBoard and MLflow equal the train log."""

from __future__ import annotations

import pytest

from alignx.profiles import parse_config
from alignx.train.training_stages import train_stage1, train_stage2
from alignx.training_records import read_log
from tests.train.tiny import LANGS

CURVES = ("loss", "lm", "ctr", "lam", "lr", "grad_norm", "tokens_per_s", "peak_rss_gib")


def _cfg(tmp_path, mlflow_uri=None):
    return parse_config({
        "name": "track", "run_root": str(tmp_path / "run"), "languages": list(LANGS),
        "tracking": {"mlflow_uri": mlflow_uri},
        "stage1": {"align_layer": 2, "lam_width": 16,
                   "train": {"steps": 4, "micro_batch_size": 4, "lr": 1e-3, "max_length": 160, "grad_clip": 0.5}},
        "stage2": {"translation_pairs_per_lang": 5,
                   "train": {"steps": 3, "micro_batch_size": 4, "lr": 1e-3, "max_length": 160}}})


def _expected(log: list[dict], name: str) -> list[float]:
    if name == "tokens_per_s":
        return [r["tokens"] / r["step_s"] for r in log]
    return [r[name] for r in log]


def test_stage_curves_equal_the_train_log_in_tensorboard_and_mlflow(tiny_llama_dir, shards, tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    uri = (tmp_path / "mlruns").as_uri()
    cfg = _cfg(tmp_path, uri)
    control = train_stage1(str(tiny_llama_dir), shards, cfg.for_control(), tmp_path / "control-s1",
                           control=True)
    alignx = train_stage1(str(tiny_llama_dir), shards, cfg, tmp_path / "alignx-s1")
    train_stage2(alignx.path, shards, cfg, tmp_path / "alignx-s2")
    logs = {"control-stage1": read_log(f"{control.path}/train_log.jsonl"),
            "alignx-stage1": read_log(f"{alignx.path}/train_log.jsonl"),
            "alignx-stage2": read_log(tmp_path / "alignx-s2" / "train_log.jsonl")}
    # the norm is logged before clipping: with clip 0.5 some step's norm is above it
    assert all(r["grad_norm"] > 0 for log in logs.values() for r in log)

    tb_root = tmp_path / "run" / "tracking" / "tensorboard" / "track"
    assert sorted(p.name for p in tb_root.iterdir()) == sorted(logs)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("track")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {f"track/{name}" for name in logs}, set(runs)
    for name, log in logs.items():
        events = EventAccumulator(str(tb_root / name)).Reload()
        run = runs[f"track/{name}"]
        assert run.info.status == "FINISHED"
        for curve in CURVES:
            expected = _expected(log, curve)
            board = events.Scalars(curve)
            assert [e.step for e in board] == [r["step"] for r in log], (name, curve)
            assert [e.value for e in board] == pytest.approx(expected, rel=1e-5, abs=1e-7), (name, curve)
            history = sorted(client.get_metric_history(run.info.run_id, curve), key=lambda m: m.step)
            assert [m.value for m in history] == pytest.approx(expected, rel=1e-9, abs=1e-12), (name, curve)
    # the config is the run's parameters: the two arms differ exactly where their stage-1 settings do
    p_control, p_alignx = (runs[f"track/{arm}-stage1"].data.params for arm in ("control", "alignx"))
    assert p_alignx["stage1.lambda_ctr"] == str(cfg.stage1.lambda_ctr) != p_control["stage1.lambda_ctr"] == "0.0"
    assert p_alignx["arm"] == '"alignx"' and p_control["arm"] == '"control"'
    # the control measures L_ctr without optimising it; AlignX's ctr curve ends lower
    assert logs["alignx-stage1"][-1]["ctr"] < logs["control-stage1"][-1]["ctr"]


def test_an_mlflow_uri_without_mlflow_is_refused_with_the_fix(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(Exception) as info:
        _cfg(tmp_path, "file:/tmp/nowhere")
    assert "tracking.mlflow_uri" in str(info.value) and "pip install mlflow-skinny" in str(info.value)


def test_a_retried_stage_continues_its_mlflow_run_and_drops_the_dead_attempts_steps(tmp_path):
    """Same key, second attempt: one MLflow run (not one per attempt); TensorBoard keeps the resumed steps once."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from alignx.tracking import Tracker

    uri = (tmp_path / "mlruns").as_uri()
    cfg = _cfg(tmp_path, uri)
    first = Tracker(cfg.tracking, tmp_path / "run", "track", "alignx-stage1", {"a": 1}, key="k1")
    for step in (1, 2, 3):
        first.log(step, {"loss": 10.0 - step})
    first.close(ok=False)  # the attempt died after step 3; its checkpoint was at step 2
    again = Tracker(cfg.tracking, tmp_path / "run", "track", "alignx-stage1", {"a": 1}, key="k1", start_step=2)
    for step in (3, 4):
        again.log(step, {"loss": 5.0 - step})
    again.close()
    assert again.mlflow_run_id == first.mlflow_run_id
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(again.mlflow_run_id).info.status == "FINISHED"
    other = Tracker(cfg.tracking, tmp_path / "run", "track", "control-stage1", {"a": 1}, key="k2")
    other.close()
    assert other.mlflow_run_id != first.mlflow_run_id
    events = EventAccumulator(str(tmp_path / "run" / "tracking" / "tensorboard" / "track" / "alignx-stage1")).Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 9.0), (2, 8.0), (3, 2.0), (4, 1.0)]
