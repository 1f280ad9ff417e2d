"""FSDP2 stage 1 launched as two gloo processes: the same trajectory as one process at the same global
batch, a kill -9 of the whole process group resumed exactly (through the Prefect task, whose first
group runs out of memory and whose second, with activation checkpointing, resumes), and a resume on
another world size."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from safetensors.torch import load_file

from alignx.artefacts import read_marker, verify_artefact
from alignx.profiles import parse_config
from prefect import flow

from alignx import launch as launcher
from alignx.artefacts import Artefact
from alignx.launch import WorkersLost, launch
from alignx.train.checkpoint import CHECKPOINT_DIR
from alignx.train.training_stages import train_stage1, work_dir_for
from alignx.training_records import read_log, read_run_record
from alignx.watchdog import children_of
from tasks import train as train_tasks
from tasks.caching import task_key
from tests.train.tiny import LANGS

pytestmark = pytest.mark.slow  # two-process FSDP runs and a kill -9

STEPS = 4


def _cfg(run_root: Path, processes: int, grad_sync: str = "step"):
    """Micro-batches of 4, a global batch of 16: two processes accumulate two micro-batches per step."""
    return parse_config({
        "name": "fsdp", "languages": list(LANGS), "run_root": str(run_root), "launch": {"processes": processes},
        "stage1": {"align_layer": 2, "lam_width": 16,
                   "train": {"steps": STEPS, "micro_batch_size": 4, "global_batch_size": 16, "lr": 1e-3,
                             "max_length": 160, "checkpoint_every": 2, "log_every": 1, "sharding": "fsdp",
                             "mixed_precision": "no", "grad_sync": grad_sync}}})


def _weights(out: Path) -> dict:
    return load_file(out / "model.safetensors")


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _launched() -> list[int]:
    """This test's torchrun agent and workers (not the Prefect test server, also a child)."""
    found = []
    for pid in children_of(os.getpid()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "alignx.launch" in cmdline or "hang_worker" in cmdline:
            found.append(pid)
    return found


def _kill_group_after_checkpoint(args: dict, cfg, lines: list[str]) -> BaseException | None:
    """Launch with the hanging worker, wait for both processes to hang after the step-2 checkpoint,
    kill -9 torchrun and its workers; return what the launcher raised."""
    hanging = threading.Event()
    raised: list[BaseException] = []

    def sink(line: str) -> None:
        lines.append(line)
        if sum(x.count("HANGING") for x in lines) >= 2:
            hanging.set()

    def run() -> None:
        try:
            launch("stage1", args, cfg, 2, on_line=sink, worker_module="tests.train.hang_worker")
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert hanging.wait(240), "the launched run never reached its checkpoint:\n" + "\n".join(lines[-40:])
    for pid in _launched():
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    thread.join(60)
    assert not thread.is_alive()
    return raised[0] if raised else None


@pytest.mark.timeout(600)
def test_two_process_fsdp_matches_one_process_and_resumes_after_kill(prefect_api, tiny_llama_dir, shards, tmp_path,
                                                                     monkeypatch):
    # one process, sharding on (nothing to shard, checkpoints in the sharded format)
    one = tmp_path / "one" / "alignx"
    train_stage1(str(tiny_llama_dir), shards, _cfg(tmp_path / "one", 1), one)
    ref_log, ref = read_log(one / "train_log.jsonl"), _weights(one)

    # two processes under torchrun, killed -9 (agent and both workers) after the step-2 checkpoint
    cfg2 = _cfg(tmp_path / "two", 2)
    base = Artefact(kind="model", path=str(tiny_llama_dir), fingerprint="tiny-llama")
    shard_art = Artefact(kind="shards", path=str(shards), fingerprint="shards")
    key = task_key(train_tasks.stage1, {"base": base, "shards": shard_art, "cfg": cfg2}).rsplit("-", 1)[-1]
    out = cfg2.resolved_run_root() / "models" / f"alignx-stage1-{key}"  # where the task will write
    args = {"model": str(tiny_llama_dir), "shards": str(shards), "out": str(out), "control": False}
    lines: list[str] = []
    error = _kill_group_after_checkpoint(args, cfg2, lines)
    assert isinstance(error, WorkersLost), error  # a lost group: transient, a rerun resumes
    work = work_dir_for(out)
    assert (work / CHECKPOINT_DIR / ".metadata").is_file() and not out.exists()
    assert not _launched(), "a process of the killed group is still running"
    spare = tmp_path / "spare" / "alignx"  # the same checkpoint, for a resume on one process below
    shutil.copytree(work, work_dir_for(spare))

    # the rerun, through the Prefect task: its first group runs out of memory (a child that raises
    # torch's OutOfMemoryError without activation checkpointing); the fallback's new group resumes at
    # step 2 on two processes and gathers the model on rank 0
    groups: list[tuple[int, bool]] = []

    def oom_then_fit(stage, a, c, processes, **kwargs):
        groups.append((processes, c.stage1.train.gradient_checkpointing))
        return launch(stage, a, c, processes, **{**kwargs, "worker_module": "tests.train.oom_worker"})

    monkeypatch.setattr(launcher, "launch", oom_then_fit)

    @flow
    def rerun() -> Artefact:
        return train_tasks.stage1(base, shard_art, cfg2)

    artefact = rerun()
    assert groups == [(2, False), (2, True)]
    assert artefact.path == str(out) and verify_artefact(read_marker(out))
    record = read_run_record(out)
    assert record["resumed_from"] == 2 and record["config"]["train"]["gradient_checkpointing"] is True
    log = read_log(out / "train_log.jsonl")
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))
    for a, b in zip(ref_log, log):  # each step's losses over the whole global batch of 8
        assert abs(a["loss"] - b["loss"]) < 1e-4 and abs(a["ctr"] - b["ctr"]) < 1e-4, (a, b)
    moved = _max_diff(ref, _weights(out))
    assert moved < 1e-4, f"two sharded processes differ from one by {moved:.2e}"
    base_weights = load_file(Path(tiny_llama_dir) / "model.safetensors")
    assert max((ref[k] - base_weights[k]).abs().max().item() for k in base_weights) > 1e-3  # it did train
    head_one, head_two = load_file(one / "lam_head.safetensors"), load_file(out / "lam_head.safetensors")
    assert _max_diff(head_one, head_two) < 1e-4
    assert not work.exists() and not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]

    # the two-process checkpoint resumes on one process (torch.distributed.checkpoint reshards it)
    train_stage1(str(tiny_llama_dir), shards, _cfg(tmp_path / "spare", 1), spare)
    assert read_run_record(spare)["resumed_from"] == 2
    assert _max_diff(ref, _weights(spare)) < 1e-4


def test_a_failing_process_is_reported_with_its_message(tiny_llama_dir, shards, tmp_path):
    """A stage that raises in its processes fails with that process's line, not torchrun's summary."""
    cfg = parse_config({"name": "bad", "languages": list(LANGS), "run_root": str(tmp_path),
                        "stage1": {"align_layer": 2, "train": {"steps": 1, "micro_batch_size": 2, "max_length": 8}}})
    args = {"model": str(tiny_llama_dir), "shards": str(shards), "out": str(tmp_path / "out"), "control": False}
    with pytest.raises(launcher.StageFailed, match=r"(?s)stage1 failed in process 0 of 1: ConfigError: .*max_length=8 cuts the response"):
        launch("stage1", args, cfg, 1)  # a group of one: the same path, half the start-up
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))  # the call file is gone too


def test_a_group_that_fails_in_the_final_gather_resumes_at_its_last_step(tiny_llama_dir, shards, tmp_path):
    """The last step is checkpointed before the weights are gathered: a rerun writes them, it does not retrain.
    The group reduce-scatters after every micro-batch (grad_sync micro_batch): the same trajectory as one process."""
    cfg = _cfg(tmp_path, 2, grad_sync="micro_batch")
    out = tmp_path / "out"
    args = {"model": str(tiny_llama_dir), "shards": str(shards), "out": str(out), "control": False}
    with pytest.raises(launcher.StageFailed, match="gather of the final weights timed out"):
        launch("stage1", args, cfg, 2, worker_module="tests.train.gather_crash_worker")
    assert not out.exists()
    artefact = launch("stage1", args, cfg, 2)
    assert verify_artefact(artefact) and read_run_record(out)["resumed_from"] == STEPS
    assert [r["step"] for r in read_log(out / "train_log.jsonl")] == list(range(1, STEPS + 1))
    assert _max_diff(_weights(out), load_file(Path(tiny_llama_dir) / "model.safetensors")) > 1e-3  # trained weights
    one = tmp_path / "one" / "alignx"
    train_stage1(str(tiny_llama_dir), shards, _cfg(tmp_path / "one", 1), one)
    assert _max_diff(_weights(one), _weights(out)) < 1e-4
