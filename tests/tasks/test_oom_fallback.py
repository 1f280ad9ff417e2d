"""The out-of-memory fallback: one retry with gradient checkpointing, after the failed attempt is freed; an
out-of-memory with checkpointing on ends the stage at once with what to change."""

from __future__ import annotations

import gc
import weakref

import pytest
from prefect import flow

from alignx.artefacts import Artefact
from alignx.profiles import load_profile
from tasks.retries import is_transient
from tasks.train import StageOutOfMemory, _with_oom_fallback


class OutOfMemoryError(RuntimeError):
    """Named as torch.cuda.OutOfMemoryError is (the fallback matches the name, not the CUDA class)."""


class Model:
    """Stands in for a model + optimizer an attempt holds in its frames."""


def test_retry_runs_with_checkpointing_after_the_failed_attempt_is_freed(tmp_path):
    cfg = load_profile("smoke", {"run_root": str(tmp_path)})
    seen: list[dict] = []
    first: list[weakref.ref] = []

    def run(c):
        model = Model()  # held by this frame, which the exception's traceback keeps alive
        if not first:
            first.append(weakref.ref(model))
            seen.append({"checkpointing": c.stage1.train.gradient_checkpointing})
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        seen.append({"checkpointing": c.stage1.train.gradient_checkpointing, "first_alive": first[0]() is not None})
        return Artefact(kind="model", path=str(tmp_path), fingerprint="fp")

    @flow
    def stage() -> Artefact:
        return _with_oom_fallback(run, cfg, "stage1")

    gc.disable()  # only the fallback's own collection may free the first attempt
    try:
        assert stage().fingerprint == "fp"
    finally:
        gc.enable()
    assert seen == [{"checkpointing": False}, {"checkpointing": True, "first_alive": False}]


def test_other_errors_and_a_second_oom_are_raised(tmp_path):
    cfg = load_profile("smoke", {"run_root": str(tmp_path)})

    def bad_input(c):
        raise ValueError("shard 3: bad row")

    def always_oom(c):
        raise OutOfMemoryError("CUDA out of memory")

    @flow
    def stage(fn) -> Artefact:
        return _with_oom_fallback(fn, cfg, "stage1")

    with pytest.raises(ValueError, match="bad row"):
        stage(bad_input)
    calls = []

    def counted_oom(c):
        calls.append(c.stage1.train.gradient_checkpointing)
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    # a second out-of-memory, with checkpointing on, is the answer: not transient, no identical retry
    with pytest.raises(StageOutOfMemory) as info:
        stage(counted_oom)
    assert calls == [False, True]
    assert not is_transient(info.value)
    message = str(info.value)
    for part in ("activation checkpointing on", "Tried to allocate 9.00 GiB", "stage1.train.lora",
                 "stage1.train.micro_batch_size (now", "stage1.train.global_batch_size", "launch.processes"):
        assert part in message, (part, message)


def test_an_oom_with_checkpointing_already_on_fails_at_once(tmp_path):
    cfg = load_profile("smoke", {"run_root": str(tmp_path), "stage1.train.gradient_checkpointing": True})
    calls = []

    def always_oom(c):
        calls.append(1)
        raise OutOfMemoryError("CUDA out of memory")

    @flow
    def stage() -> Artefact:
        return _with_oom_fallback(always_oom, cfg, "stage1")

    with pytest.raises(StageOutOfMemory, match="retrying the same run cannot fit"):
        stage()
    assert calls == [1]
