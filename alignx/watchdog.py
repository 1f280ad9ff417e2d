"""Stops a command's child processes when the command dies, however it dies.

A ``kill -9`` of the ``alignx`` command used to leave its temporary Prefect server (uvicorn) and any
worker processes running. ``watch(pid)`` starts a small separate process that notes the command's
children every second; when the command is gone it terminates those children (then kills what
ignores the request) and exits. The watchdog checks each child's start time, so a process id reused
by an unrelated process is never touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from alignx.process_identity import parent_pids, process_start_ticks

POLL_S = 1.0
GRACE_S = 5.0


def children_of(pid: int) -> dict[int, int]:
    """Direct and indirect children of ``pid`` on Linux: {child pid: start ticks}."""
    parents = parent_pids()
    found: dict[int, int] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                ticks = process_start_ticks(child)
                if ticks is not None:
                    found[child] = ticks
                    frontier.append(child)
    return found


def _alive(pid: int, ticks: int) -> bool:
    return process_start_ticks(pid) == ticks


def guard(parent: int) -> None:
    """Run until ``parent`` exits, then stop the children it left (the watchdog's own loop)."""
    me = os.getpid()
    parent_ticks = process_start_ticks(parent)
    known: dict[int, int] = {}
    while parent_ticks is not None and _alive(parent, parent_ticks):
        known.update({pid: t for pid, t in children_of(parent).items() if pid != me})
        known = {pid: t for pid, t in known.items() if _alive(pid, t)}
        time.sleep(POLL_S)
    left = {pid: t for pid, t in known.items() if _alive(pid, t)}
    for pid in left:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and any(_alive(p, t) for p, t in left.items()):
        time.sleep(0.1)
    for pid, ticks in left.items():
        if _alive(pid, ticks):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def watch(pid: int | None = None) -> subprocess.Popen | None:
    """Start a watchdog for ``pid`` (default: this process); None where /proc is missing (not Linux)."""
    if not Path("/proc/self/stat").exists():
        return None
    pid = pid or os.getpid()
    return subprocess.Popen([sys.executable, "-m", "alignx.watchdog", str(pid)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


if __name__ == "__main__":
    guard(int(sys.argv[1]))
