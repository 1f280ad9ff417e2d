"""A file lock manager for cached tasks that survives the death of a lock's holder.

Prefect's file lock manager writes ``{"holder", "expiration": null}`` and waits for it forever: a task
killed while it held its lock (``kill -9``, an out-of-memory kill, a reboot, a lost worker) blocked
every later run of that stage. Here a lock also records its holder's host, process id and the task
run it serves, and the holder keeps the file's modification time fresh (the heartbeat). A waiter
breaks a lock whose holder is provably dead on this host, or whose heartbeat is older than
``stale_after_s`` (a holder on another host), logs a warning naming both, and marks the dead attempt's
task run Crashed. Waiting on a live holder is logged at least once a minute.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect.locking.filesystem import FileSystemLockManager

from alignx.process_identity import Holder

logger = logging.getLogger("alignx.locks")

HEARTBEAT_EVERY_S = 15.0
WAIT_LOG_EVERY_S = 30.0
_PARTIAL_GRACE_S = 30.0  # a lock file without a complete record is young, or its writer died writing it


def _run_logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        from prefect.logging import get_run_logger

        return get_run_logger()
    except Exception:  # outside a flow or task run
        return logger


def _current_runs() -> dict[str, str | None]:
    try:
        from prefect.context import FlowRunContext, TaskRunContext

        task_ctx, flow_ctx = TaskRunContext.get(), FlowRunContext.get()
        return {"task_run_id": str(task_ctx.task_run.id) if task_ctx else None,
                "task_run_name": task_ctx.task_run.name if task_ctx else None,
                "flow_run_id": str(flow_ctx.flow_run.id) if flow_ctx and flow_ctx.flow_run else None}
    except Exception:
        return {"task_run_id": None, "task_run_name": None, "flow_run_id": None}


def mark_crashed(record: dict[str, Any], reason: str) -> None:
    """Set the dead holder's task run (and its flow run, if still running and not ours) to Crashed; best effort."""
    if not record.get("task_run_id") and not record.get("flow_run_id"):
        return
    try:
        from uuid import UUID

        from prefect.client.orchestration import get_client
        from prefect.states import Crashed

        with get_client(sync_client=True) as client:
            if record.get("task_run_id"):
                run = client.read_task_run(UUID(record["task_run_id"]))
                if run.state is None or not run.state.is_final():
                    client.set_task_run_state(run.id, Crashed(message=reason), force=True)
            # a retried flow run keeps its id: never crash the run that is breaking the lock
            if record.get("flow_run_id") and record["flow_run_id"] != _current_runs()["flow_run_id"]:
                flow_run = client.read_flow_run(UUID(record["flow_run_id"]))
                if flow_run.state is not None and flow_run.state.is_running():
                    client.set_flow_run_state(flow_run.id, Crashed(message=reason), force=True)
    except Exception as exc:  # the run may live on another API, or be gone; the lock is broken either way
        logger.debug("could not mark the dead attempt's run Crashed: %s", exc)


class HolderAwareLockManager(FileSystemLockManager):
    """``FileSystemLockManager`` whose locks name their holder and are broken when that holder died."""

    def __init__(self, lock_files_directory: Path, stale_after_s: float = 300.0,
                 heartbeat_every_s: float = HEARTBEAT_EVERY_S) -> None:
        super().__init__(lock_files_directory)
        self.stale_after_s = stale_after_s
        self.heartbeat_every_s = heartbeat_every_s
        self._held: dict[str, Path] = {}
        self._mutex = threading.Lock()
        self._routes: dict[str, Path] = {}  # key -> directory of its lock (the run root's, see route)
        self._beat: threading.Thread | None = None
        self._waits: dict[str, float] = {}


    def route(self, key: str, directory: Path) -> None:
        """Keep ``key``'s lock in ``directory`` (a run root's ``locks/``) instead of the default one."""
        self._routes[key] = Path(directory)

    def _lock_path_for_key(self, key: str) -> Path:
        directory = self._routes.get(key)
        if directory is None:
            return super()._lock_path_for_key(key)
        directory.mkdir(parents=True, exist_ok=True)
        return directory.joinpath(key).with_suffix(".lock")
    def __deepcopy__(self, memo: dict) -> "HolderAwareLockManager":
        return self  # one manager per process: its heartbeat covers every lock the process holds

    # ------------------------------------------------------------ reading a lock
    def _read_record(self, path: Path) -> dict[str, Any] | None:
        """The lock's record, ``{}`` for one without a complete record, None when there is no lock."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            return {}
        try:
            record = json.loads(raw)
        except ValueError:
            return {}
        return record if isinstance(record, dict) else {}

    def _get_lock_info(self, key: str, use_cache: bool = True) -> Any:
        if use_cache and key in self._locks:
            return self._locks[key]
        path = self._lock_path_for_key(key)
        record = self._read_record(path)
        if record is None:
            return None
        info = {"holder": record.get("holder", ""), "expiration": None, "path": path}
        self._locks[key] = info
        return info

    def _dead_reason(self, path: Path, record: dict[str, Any]) -> str | None:
        """Why the lock's holder is dead, or None while it may be alive."""
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return None
        holder = Holder.from_dict(record)
        if holder is None:
            if age > _PARTIAL_GRACE_S:
                return f"the lock file has no holder record and has not changed for {age:.0f} s"
            return None
        if holder.is_dead():
            return f"its holder ({holder.describe()}) is no longer running"
        if not holder.on_this_host() and age > self.stale_after_s:
            return (f"its holder ({holder.describe()}) has not renewed its heartbeat for {age:.0f} s "
                    f"(limit {self.stale_after_s:.0f} s)")
        return None

    def _break(self, key: str, path: Path, record: dict[str, Any], reason: str) -> None:
        """Remove a dead holder's lock without ever removing a lock that a live process just took."""
        tomb = path.with_name(f"{path.name}.broken-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, tomb)
        except FileNotFoundError:
            return  # someone else broke or released it
        if self._read_record(tomb) != record:  # taken by a live process between our read and rename
            try:
                os.link(tomb, path)
            except FileExistsError:
                pass
            tomb.unlink(missing_ok=True)
            return
        tomb.unlink(missing_ok=True)
        self._locks.pop(key, None)
        run = record.get("task_run_name") or record.get("task_run_id") or "unknown task run"
        _run_logger().warning("broke the lock %s: %s; the attempt that held it (%s) is marked Crashed",
                              path.name, reason, run)
        mark_crashed(record, f"AlignX found this attempt dead: {reason}; its lock {path.name} was broken")

    def is_locked(self, key: str, use_cache: bool = False) -> bool:
        path = self._lock_path_for_key(key)
        record = self._read_record(path)
        if record is None:
            self._locks.pop(key, None)
            return False
        reason = self._dead_reason(path, record)
        if reason is None:
            return True
        self._break(key, path, record, reason)
        return path.exists()

    def is_lock_holder(self, key: str, holder: str) -> bool:
        record = self._read_record(self._lock_path_for_key(key))
        return bool(record) and record.get("holder") == holder

    # ------------------------------------------------------------ taking and releasing
    def acquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None,
                     hold_timeout: float | None = None) -> bool:
        self._ensure_lock_files_directory_exists()
        path = self._lock_path_for_key(key)
        me = Holder.current()
        record = {"holder": holder, "expiration": None, **me.as_dict(), **_current_runs(),
                  "acquired": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        while True:
            if self.is_lock_holder(key, holder):
                return True
            if self.is_locked(key):
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not self.wait_for_lock(key, remaining):
                    return False
            # the record is complete before the lock exists: write it aside, then link it into place
            tmp = path.with_name(f".{path.name}.new-{uuid.uuid4().hex[:8]}")
            tmp.write_text(json.dumps(record))
            try:
                os.link(tmp, path)
            except FileExistsError:
                continue  # another process took it first: wait again
            finally:
                tmp.unlink(missing_ok=True)
            self._locks[key] = {"holder": holder, "expiration": None, "path": path}
            self._start_heartbeat(key, path)
            return True

    async def aacquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None,
                            hold_timeout: float | None = None) -> bool:
        import anyio

        return await anyio.to_thread.run_sync(self.acquire_lock, key, holder, acquire_timeout, hold_timeout)

    def release_lock(self, key: str, holder: str) -> None:
        """Release our lock; releasing one that is already gone is a no-op (an eager transaction's
        parent commits its children a second time), releasing another holder's lock an error."""
        with self._mutex:
            self._held.pop(key, None)
        if self._read_record(self._lock_path_for_key(key)) is None:
            self._locks.pop(key, None)
            return
        super().release_lock(key, holder)

    # ------------------------------------------------------------ waiting
    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        start = time.monotonic()
        last_log = None
        while self.is_locked(key):
            waited = time.monotonic() - start
            if timeout is not None and waited >= timeout:
                return False
            if last_log is None or time.monotonic() - last_log >= WAIT_LOG_EVERY_S:
                last_log = time.monotonic()
                record = self._read_record(self._lock_path_for_key(key)) or {}
                holder = Holder.from_dict(record)
                who = holder.describe() if holder else "an unknown holder"
                run = record.get("task_run_name") or record.get("task_run_id") or "?"
                _run_logger().info("waiting for the lock %s.lock, held by %s (task run %s, since %s); waited %.0f s",
                                   key, who, run, record.get("acquired", "?"), waited)
            time.sleep(0.2)
        return True

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        import anyio

        return await anyio.to_thread.run_sync(self.wait_for_lock, key, timeout)

    # ------------------------------------------------------------ heartbeat
    def _start_heartbeat(self, key: str, path: Path) -> None:
        with self._mutex:
            self._held[key] = path
            if self._beat is None or not self._beat.is_alive():
                self._beat = threading.Thread(target=self._heartbeat, name="alignx-lock-heartbeat", daemon=True)
                self._beat.start()

    def _heartbeat(self) -> None:
        while True:
            time.sleep(self.heartbeat_every_s)
            with self._mutex:
                held = list(self._held.values())
            for path in held:
                try:
                    os.utime(path)
                except OSError:
                    pass
