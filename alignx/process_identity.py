"""Who holds something, and whether they are still alive: the identity a lock or a temporary file records,
read from the process table (``/proc``) of this host.

A holder is a process on a host. On this host a dead holder is certain: its process id is gone, is a
zombie, belongs to a process started later (the id was reused), or the machine has rebooted since.
On another host only time can tell, through a heartbeat that the holder keeps fresh.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (Linux; ``proc(5)`` fields 3 on: state,
    parent pid, ...), None when unknown or gone. The one reader of a process's stat in the library."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: fields start after the last ')'
    return stat[stat.rindex(")") + 2:].split()


def process_start_ticks(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (Linux), None when unknown or gone."""
    fields = proc_stat(pid)
    if fields is None or fields[0] in ("Z", "X"):  # zombie or dead: exited, not yet reaped
        return None
    return int(fields[19])


def parent_pids() -> dict[int, int]:
    """Every process on this host with its parent (Linux): {pid: parent pid}."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = proc_stat(int(entry.name))
        if fields is not None:
            parents[int(entry.name)] = int(fields[1])
    return parents


@dataclass(frozen=True)
class Holder:
    """A process on a host: enough to tell later whether it is still running."""

    host: str
    pid: int
    boot_id: str = ""
    start_ticks: int | None = None

    @classmethod
    def current(cls) -> "Holder":
        pid = os.getpid()
        return cls(host=socket.gethostname(), pid=pid, boot_id=_boot_id(), start_ticks=process_start_ticks(pid))

    @classmethod
    def from_dict(cls, data: dict) -> "Holder | None":
        try:
            return cls(host=str(data["host"]), pid=int(data["pid"]), boot_id=str(data.get("boot_id") or ""),
                       start_ticks=data.get("start_ticks"))
        except (KeyError, TypeError, ValueError):
            return None

    def as_dict(self) -> dict:
        return asdict(self)

    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def is_dead(self) -> bool:
        """True only when this host can prove the holder is gone; other hosts are never judged here."""
        if not self.on_this_host():
            return False
        if self.boot_id and _boot_id() and self.boot_id != _boot_id():
            return True  # the machine rebooted since the holder wrote this
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, another user's process
        ticks = process_start_ticks(self.pid)
        if ticks is None:
            return Path("/proc").is_dir()  # a zombie on Linux; elsewhere kill(0) is all we can know
        return self.start_ticks is not None and ticks != self.start_ticks

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


def temp_tag() -> str:
    """The part of a temporary file name that identifies its writer: ``<host>~<pid>~<start ticks>``."""
    me = Holder.current()
    return f"{me.host.replace('~', '-').replace('/', '-')}~{me.pid}~{me.start_ticks or 0}"


def writer_of(tag: str) -> Holder | None:
    """The writer a :func:`temp_tag` names, or None for a name written some other way."""
    parts = tag.split("~")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    ticks = int(parts[2]) or None
    return Holder(host=parts[0], pid=int(parts[1]), start_ticks=ticks)
