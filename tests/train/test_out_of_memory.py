"""Out-of-memory that arrives some other way than torch's OutOfMemoryError is still recognised as
out-of-memory: an allocation failure raised inside NCCL, cuBLAS or cuDNN, and a worker the kernel's
OOM killer ends. A plain kill stays a lost worker; a bad input stays a failure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alignx import launch as launcher
from alignx.profiles import parse_config
from alignx.train.worker import is_out_of_memory
from tests.train.tiny import LANGS

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
