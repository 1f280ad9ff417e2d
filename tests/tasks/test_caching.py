"""Cache keys, retry rules and verified cache hits of the task layer, on real Prefect tasks."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect import flow, task

from alignx.artefacts import Artefact, atomic_dir, write_marker
from alignx.profiles import load_profile
from tasks.caching import run_verified, stage_cache
from tasks.retries import is_transient

pytestmark = pytest.mark.usefixtures("prefect_api")
CALLS: list[str] = []


def _build(out: Path, text: str) -> Artefact:
    with atomic_dir(out) as tmp:
        (tmp / "part.txt").write_text(text)
    return write_marker(out, "test")


@task(cache_policy=stage_cache(["stage1"]), persist_result=True)
def make_a(out: str, text: str, cfg) -> Artefact:
    CALLS.append("a")
    return _build(Path(out), text)


@task(cache_policy=stage_cache(["stage1"]), persist_result=True)
def make_b(out: str, text: str, cfg) -> Artefact:
    CALLS.append("b")
    return _build(Path(out), text)


@task(cache_policy=stage_cache(["stage2"]), persist_result=True)
def consume(record: Artefact, cfg) -> str:
    CALLS.append("consume")
    return (Path(record.path) / "part.txt").read_text()


def test_keys_cover_task_config_section_and_inputs(tmp_path):
    cfg = load_profile("smoke", {"run_root": str(tmp_path / "run")})

    @flow
    def run(cfg, text: str) -> tuple[str, str]:
        a = run_verified(make_a, str(tmp_path / "a"), text, cfg)
        b = run_verified(make_b, str(tmp_path / "b"), text, cfg)
        return consume(a, cfg), consume(b, cfg)

    CALLS.clear()
    assert run(cfg, "one") == ("one", "one")
    # Equal inputs, different tasks: no collision. The consumer is content-addressed: a and b hold the
    # same bytes, so the second consume is a hit.
    assert CALLS == ["a", "b", "consume"]
    CALLS.clear()
    run(cfg, "one")
    assert CALLS == []  # all cache hits
    # A section the tasks do not read leaves them cached; one they read re-runs them.
    CALLS.clear()
    run(load_profile("smoke", {"run_root": str(tmp_path / "run"), "eval.batch_size": 3}), "one")
    assert CALLS == []
    CALLS.clear()
    run(load_profile("smoke", {"run_root": str(tmp_path / "run"), "stage2.train.lr": 0.5}), "one")
    assert CALLS == ["consume"]
    # The consumer is keyed on its input's fingerprint: new content re-runs it.
    CALLS.clear()
    assert run(cfg, "two") == ("two", "two")
    assert CALLS == ["a", "b", "consume"]


def test_vanished_or_altered_artefact_is_rebuilt(tmp_path):
    cfg = load_profile("smoke", {"run_root": str(tmp_path / "run")})

    @flow
    def run() -> Artefact:
        return run_verified(make_a, str(tmp_path / "a"), "content", cfg)

    CALLS.clear()
    first = run()
    assert CALLS == ["a"]
    (Path(first.path) / "part.txt").write_text("tampered")
    CALLS.clear()
    second = run()
    assert CALLS == ["a"]
    assert (Path(second.path) / "part.txt").read_text() == "content"
    import shutil

    shutil.rmtree(first.path)
    CALLS.clear()
    third = run()
    assert CALLS == ["a"] and Path(third.path, "part.txt").is_file()


def test_only_transient_errors_are_retried():
    assert is_transient(OSError("disk hiccup"))
    assert is_transient(TimeoutError())
    assert is_transient(MemoryError())
    assert not is_transient(FileNotFoundError("missing input"))
    assert not is_transient(IsADirectoryError("a directory"))
    assert not is_transient(ValueError("bad row"))
    assert not is_transient(None)


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("crash")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
