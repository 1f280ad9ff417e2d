"""How the ``alignx`` command ends: a stop (SIGTERM, Ctrl-C) or a failure, in one line, never waiting for
threads that still train."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any


def failure_line(exc: BaseException) -> str:
    """What failed, in one line: the innermost message of the exception chain."""
    message = str(exc).strip() or type(exc).__name__
    first = message.splitlines()[0]
    more = len(message.splitlines()) > 1
    return f"{type(exc).__name__}: {first}" + (" (more in the log)" if more else "")


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's stop): unwinds like Ctrl-C, so the run is recorded as stopped,
    temporary artefacts are cleaned up and the temporary Prefect server stops."""


def on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def chain_has(exc: BaseException | None, kind: type[BaseException] | tuple[type[BaseException], ...]) -> bool:
    """Whether ``exc`` or an exception it was raised while handling is a ``kind``."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def end_if_threads_run(code: int) -> None:
    """End the process now when threads other than this one would keep it alive (arm chains training in a
    pipeline's threads: leaving normally waits for their stages to end). The flow run is already
    recorded as crashed; locks and temporaries of a dead process are recovered by the next run, and the
    watchdog stops the temporary server."""
    others = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    if threading.current_thread() is threading.main_thread() and others:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def say(line: str) -> None:
    """One line on stderr that never raises: a stop must end the process even when whoever read its output
    is gone (a closed terminal, a killed supervisor: writing to the broken pipe raises)."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
