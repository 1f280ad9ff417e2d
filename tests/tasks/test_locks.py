"""Locks that survive their holder's death: broken when the holder is dead, honoured while it lives."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from uuid import UUID

import pytest
from prefect import flow, task

from alignx.artefacts import Artefact, atomic_dir, write_marker
from alignx.process_identity import Holder
from tasks.locks import HolderAwareLockManager


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(directory: Path, key: str, **record) -> Path:
    path = directory / f"{key}.lock"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"holder": "someone", "expiration": None, **record}))
    return path


def test_lock_records_holder_host_pid_and_run(tmp_path):
    manager = HolderAwareLockManager(tmp_path)
    assert manager.acquire_lock("k", holder="h1")
    record = json.loads((tmp_path / "k.lock").read_text())
    assert record["holder"] == "h1"
    assert record["pid"] == os.getpid()
    assert record["host"] == socket.gethostname()
    assert record["start_ticks"] == Holder.current().start_ticks
    manager.release_lock("k", holder="h1")
    assert not (tmp_path / "k.lock").exists()


def test_lock_of_a_dead_process_is_broken_with_a_warning(tmp_path, caplog):
    dead = Holder(host=socket.gethostname(), pid=_dead_pid())
    path = _write_lock(tmp_path, "k", **dead.as_dict(), task_run_name="stage1-abc")
    manager = HolderAwareLockManager(tmp_path)
    with caplog.at_level(logging.WARNING, logger="alignx.locks"):
        assert manager.acquire_lock("k", holder="me", acquire_timeout=5)
    assert json.loads(path.read_text())["holder"] == "me"
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "k.lock" in warning and f"pid {dead.pid}" in warning and "stage1-abc" in warning


def test_lock_of_a_killed_process_is_broken(tmp_path):
    """A real holder process, killed with SIGKILL while it holds the lock."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tasks.locks import HolderAwareLockManager\n"
        "HolderAwareLockManager(Path(sys.argv[1])).acquire_lock('k', holder='victim')\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        assert proc.stdout.readline().strip() == "held"
        manager = HolderAwareLockManager(tmp_path)
        assert not manager.acquire_lock("k", holder="me", acquire_timeout=0.5), "a live holder's lock was taken"
        proc.kill()
        proc.wait()
        assert manager.acquire_lock("k", holder="me", acquire_timeout=5)
    finally:
        proc.kill()


def test_reused_pid_counts_as_dead(tmp_path):
    me = Holder.current()
    _write_lock(tmp_path, "k", **{**me.as_dict(), "start_ticks": (me.start_ticks or 0) + 12345})
    assert HolderAwareLockManager(tmp_path).acquire_lock("k", holder="me", acquire_timeout=2)


def test_live_holder_is_waited_for_and_logged(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("tasks.locks.WAIT_LOG_EVERY_S", 0.3)
    first, second = HolderAwareLockManager(tmp_path), HolderAwareLockManager(tmp_path)
    assert first.acquire_lock("k", holder="one")
    with caplog.at_level(logging.INFO, logger="alignx.locks"):
        assert not second.acquire_lock("k", holder="two", acquire_timeout=1.0)
    waits = [r.getMessage() for r in caplog.records if "waiting for the lock" in r.getMessage()]
    assert len(waits) >= 2 and f"pid {os.getpid()}" in waits[0]
    threading.Timer(0.5, first.release_lock, args=("k", "one")).start()
    assert second.acquire_lock("k", holder="two", acquire_timeout=10)


def test_other_host_is_judged_by_its_heartbeat(tmp_path):
    other = {"host": "some-other-host", "pid": 1, "boot_id": "x", "start_ticks": 1}
    path = _write_lock(tmp_path, "k", **other)
    manager = HolderAwareLockManager(tmp_path, stale_after_s=60)
    assert not manager.acquire_lock("k", holder="me", acquire_timeout=0.5), "a fresh heartbeat was ignored"
    old = time.time() - 120
    os.utime(path, (old, old))
    assert manager.acquire_lock("k", holder="me", acquire_timeout=5)


def test_heartbeat_keeps_the_lock_fresh(tmp_path):
    manager = HolderAwareLockManager(tmp_path, heartbeat_every_s=0.1)
    assert manager.acquire_lock("k", holder="me")
    path = tmp_path / "k.lock"
    old = time.time() - 1000
    os.utime(path, (old, old))
    time.sleep(0.5)
    assert time.time() - path.stat().st_mtime < 5


def test_half_written_lock_is_broken_only_when_old(tmp_path):
    path = tmp_path / "k.lock"
    path.write_text("")
    manager = HolderAwareLockManager(tmp_path)
    assert not manager.acquire_lock("k", holder="me", acquire_timeout=0.5)
    old = time.time() - 600
    os.utime(path, (old, old))
    assert manager.acquire_lock("k", holder="me", acquire_timeout=5)


# ---------------------------------------------------------------- through a real Prefect task
@pytest.mark.usefixtures("prefect_api")
def test_cached_task_breaks_a_dead_attempts_lock_and_marks_it_crashed(tmp_path):
    """A lock left by a killed attempt (same key, dead pid, its task run Running) no longer blocks."""
    from prefect.client.orchestration import get_client
    from prefect.context import TaskRunContext
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Running
    from prefect.transactions import get_transaction

    from alignx.profiles import load_profile
    from tasks.caching import LOCK_MANAGER, stage_cache

    seen: dict[str, str] = {}

    @task(cache_policy=stage_cache(["stage1"]), persist_result=True)
    def build(out: str, cfg) -> Artefact:
        seen["key"] = get_transaction().key
        with atomic_dir(Path(out)) as tmp:
            (tmp / "x.txt").write_text(str(time.time()))
        return write_marker(Path(out), "test")

    @task
    def attempt() -> str:
        return str(TaskRunContext.get().task_run.id)

    cfg = load_profile("smoke", {"run_root": str(tmp_path / "run")})
    out = str(tmp_path / "artefact")

    @flow
    def first() -> str:
        build(out, cfg)
        return attempt()

    victim = first()
    assert not list(LOCK_MANAGER.lock_files_directory.glob("*.lock")), "a finished task left its lock"
    with get_client(sync_client=True) as client:
        for _ in range(100):  # task runs reach the API through events, a moment later
            try:
                client.read_task_run(UUID(victim))
                break
            except ObjectNotFound:
                time.sleep(0.2)
        client.set_task_run_state(UUID(victim), Running(), force=True)  # as a killed attempt leaves it
    dead = Holder(host=socket.gethostname(), pid=_dead_pid(), start_ticks=1)
    _write_lock(LOCK_MANAGER.lock_files_directory, seen["key"], **dead.as_dict(),
                task_run_id=victim, task_run_name="build-victim")

    @flow
    def rerun() -> Artefact:
        return build.with_options(refresh_cache=True)(out, cfg)

    done: list[Artefact] = []
    worker = threading.Thread(target=lambda: done.append(rerun()), daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "the rerun hung on the dead attempt's lock"
    assert done and Path(done[0].path, "x.txt").is_file()
    with get_client(sync_client=True) as client:
        state = client.read_task_run(UUID(victim)).state
    assert state.type.value == "CRASHED" and "lock" in (state.message or "")


def test_releasing_twice_is_harmless_but_not_someone_elses(tmp_path):
    manager = HolderAwareLockManager(tmp_path)
    assert manager.acquire_lock("k", holder="me")
    manager.release_lock("k", holder="me")
    manager.release_lock("k", holder="me")  # a parent transaction committing its child again
    assert manager.acquire_lock("k", holder="other")
    with pytest.raises(ValueError, match="No lock held by me"):
        manager.release_lock("k", holder="me")


def test_a_tasks_lock_lives_in_its_run_root(tmp_path, monkeypatch):
    """Without ALIGNX_LOCK_DIR, every process working on a run root takes its locks in ``<run root>/locks``."""
    from types import SimpleNamespace

    from alignx.profiles import load_profile
    from tasks import caching
    from tasks import train as train_tasks

    monkeypatch.setattr(caching, "LOCK_DIR_FIXED", None)
    cfg = load_profile("smoke", {"run_root": str(tmp_path / "run")})
    task = train_tasks.bootstrap
    context = SimpleNamespace(task=SimpleNamespace(fn=task.fn, name=task.name))
    key = task.cache_policy.cache_key_fn(context, {"shards": Artefact(kind="shards", path="/x", fingerprint="f"), "cfg": cfg})
    assert caching.LOCK_MANAGER.acquire_lock(key, holder="me")
    try:
        assert (tmp_path / "run" / "locks" / f"{key}.lock").is_file()
    finally:
        caching.LOCK_MANAGER.release_lock(key, holder="me")
    assert not (tmp_path / "run" / "locks" / f"{key}.lock").exists()
