"""How a launched stage meets the machine: out-of-memory that arrives some other way than torch's
OutOfMemoryError is still out-of-memory (an allocation failure raised inside NCCL, cuBLAS or cuDNN, a
worker the kernel's OOM killer ends), a plain kill stays a lost worker, a bad input stays a failure;
and two stages started on one machine never hold its devices at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alignx import launch as launcher
from alignx.profiles import parse_config
from alignx.train.worker import is_out_of_memory
from tests.train.tiny import LANGS

pytestmark = pytest.mark.slow  # launched groups: scheduled first

NCCL = ("NCCL error in: /pytorch/torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:3356, unhandled cuda error "
        "(run with NCCL_DEBUG=INFO for details), NCCL version 2.21.5\nncclUnhandledCudaError: Call to CUDA "
        "function failed.\nLast error:\nCuda failure 'out of memory'")


def test_allocation_failures_from_other_libraries_are_out_of_memory():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(torch.distributed.DistBackendError(NCCL))
    assert is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"))
    assert is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                                         "can't allocate memory: you tried to allocate 34359738368 bytes"))
    try:  # the allocation failure as the cause of a wrapping error
        try:
            raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED")
        except RuntimeError as inner:
            raise ValueError("step 12 failed") from inner
    except ValueError as outer:
        assert is_out_of_memory(outer)
    for other in (ValueError("shards.parquet row 3: expected a language code"),
                  RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 16x8)"),
                  torch.distributed.DistBackendError("NCCL communicator was aborted on rank 1")):
        assert not is_out_of_memory(other)


def _launch(tmp_path: Path, tiny_llama_dir, shards):
    cfg = parse_config({"name": "faults", "languages": list(LANGS), "run_root": str(tmp_path),
                        "stage1": {"align_layer": 2, "lam_width": 16,
                                   "train": {"steps": 1, "micro_batch_size": 2, "max_length": 160}}})
    args = {"model": str(tiny_llama_dir), "shards": str(shards), "out": str(tmp_path / "out"), "control": False}
    return launcher.launch("stage1", args, cfg, 1, worker_module="tests.train.memory_fault_worker")


def test_cublas_allocation_failure_in_a_launched_stage_is_out_of_memory(tiny_llama_dir, shards, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMORY_FAULT", "cublas")
    with pytest.raises(launcher.OutOfMemoryError, match="CUBLAS_STATUS_ALLOC_FAILED"):
        _launch(tmp_path, tiny_llama_dir, shards)


def test_a_worker_the_oom_killer_ends_is_out_of_memory_and_a_plain_kill_is_a_lost_worker(
        tiny_llama_dir, shards, tmp_path, monkeypatch):
    counter = tmp_path / "oom_kill"
    counter.write_text("0")
    monkeypatch.setenv("OOM_COUNTER", str(counter))
    monkeypatch.setattr(launcher, "oom_kill_count", lambda: int(counter.read_text()))
    monkeypatch.setenv("MEMORY_FAULT", "oom-kill")
    with pytest.raises(launcher.OutOfMemoryError, match="out-of-memory killer ended a process"):
        _launch(tmp_path / "a", tiny_llama_dir, shards)
    monkeypatch.setenv("MEMORY_FAULT", "kill")
    with pytest.raises(launcher.WorkersLost, match="SIGKILL|exit status"):
        _launch(tmp_path / "b", tiny_llama_dir, shards)


def test_this_machine_reports_an_oom_kill_count():
    count = launcher.oom_kill_count()
    assert count is not None and count >= 0  # cgroup or /proc/vmstat: a machine without either gets None


def test_two_stages_started_on_one_machine_never_hold_it_at_once(tmp_path, monkeypatch):
    """Each launched group takes the whole machine; a second stage waits for the first (launch.host_lock)."""
    import threading

    log = tmp_path / "timed.log"
    monkeypatch.setenv("TIMED_LOG", str(log))
    cfg = parse_config({"name": "lock", "languages": list(LANGS), "run_root": str(tmp_path),
                        "launch": {"processes": 2, "host_lock": str(tmp_path / "host.lock")}})
    lines: list[str] = []
    errors: list[BaseException] = []

    def stage(name: str) -> None:
        try:
            launcher.run_stage("stage2", {"model": "m", "shards": "s", "out": str(tmp_path / name)}, cfg,
                               on_line=lines.append, worker_module="tests.train.timed_worker")
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=stage, args=(name,)) for name in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    rows = [line.split() for line in log.read_text().splitlines()]
    assert len(rows) == 4  # two processes per stage
    spans = {name: (min(float(r[1]) for r in rows if r[0] == name), max(float(r[2]) for r in rows if r[0] == name))
             for name in ("first", "second")}
    (a_start, a_end), (b_start, b_end) = sorted(spans.values())
    assert a_end <= b_start, spans  # the second group started after the first had ended
    assert any("waits for this machine's devices: held by pid" in line for line in lines)
