"""The temporary Prefect API server a command's flows report to when no server is configured.

Prefect starts one itself at the first API call (``SubprocessASGIServer``), but to do so it first imports
the whole server application into the command's own process (about 6 s of CPU, for a server that then
runs in another process) and only starts it when the first flow starts. The command starts the same
server instead (uvicorn on Prefect's app factory, with the environment and settings Prefect gives it)
as soon as it knows it runs flows, so the server boots while the command loads its own code, and the
command never imports the server's code. With ``PREFECT_API_URL`` set (a real server), nothing starts.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path

PORT_IN_USE_EXIT = 3  # uvicorn's exit status when it cannot bind its port


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TemporaryServer:
    """One uvicorn process serving Prefect's API on a free loopback port, its database in PREFECT_HOME."""

    def __init__(self, settings_env: dict[str, str], startup_timeout_s: float, log_file: Path):
        self._env = {**os.environ, **settings_env, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                     "PREFECT__SERVER_FINAL": "1"}
        self.startup_timeout_s = startup_timeout_s
        self.log_file = log_file  # the server's own output: a stop's shutdown noise stays off the console
        self.process: subprocess.Popen | None = None
        self.port = 0
        self._spawn()
        # exit handlers run last-registered first: Prefect's (registered once flows run) flush to the
        # server before this one stops it
        atexit.register(self.stop)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _spawn(self) -> None:
        import prefect

        self.port = _free_port()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
                 "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                 "--log-level", "error", "--lifespan", "on"],
                env=self._env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        """Block until the API answers its health check; a clear error if the server exits or never answers."""
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code == PORT_IN_USE_EXIT:  # another process took the port between the probe and the bind
                self._spawn()
                continue
            if code is not None:
                raise RuntimeError(f"the temporary Prefect server exited with status {code} before it answered "
                                   f"(PREFECT_HOME={os.environ.get('PREFECT_HOME')}): {self._last_line()}; its "
                                   f"output is in {self.log_file}. Set PREFECT_API_URL to use a running server.")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the temporary Prefect server did not answer within {self.startup_timeout_s:.0f} s "
                           f"(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS); its output is in {self.log_file}")

    def _last_line(self) -> str:
        try:
            lines = [ln for ln in self.log_file.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "no output"
        return lines[-1].strip() if lines else "no output"

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def start_if_needed(log_file: Path) -> TemporaryServer | None:
    """Start a temporary server when Prefect would start one (no API URL, ephemeral mode enabled); its
    output goes to ``log_file``."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return None
    return TemporaryServer(settings.to_environment_variables(exclude_unset=True),
                           settings.server.ephemeral.startup_timeout_seconds, log_file)


@contextmanager
def api_of(server: TemporaryServer | None) -> Iterator[None]:
    """Run the body against ``server`` (nothing to do without one). The server stops when the process
    exits, after Prefect's own exit handlers have sent their last logs and events to it."""
    if server is None:
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server.wait_ready()
    os.environ["PREFECT_API_URL"] = server.api_url  # processes this command starts report to it too
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)
