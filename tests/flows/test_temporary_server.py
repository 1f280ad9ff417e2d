"""The command's own temporary Prefect server: started only when no API is configured, serves a flow run,
never loads the server's code into the command, and is gone when the command exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from alignx.process_identity import process_start_ticks
from flows.temporary_server import start_if_needed

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys
from pathlib import Path
from flows.temporary_server import api_of, start_if_needed
server = start_if_needed(Path(sys.argv[1]))
from prefect import flow

@flow(name="probe")
def probe() -> int:
    return 7

with api_of(server):
    from prefect.client.orchestration import get_client
    value = probe()
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
print(json.dumps({"value": value, "pid": server.process.pid, "ticks": open(f"/proc/{server.process.pid}/stat").read().split()[21],
                  "url": server.api_url, "runs": [r.state.type.value for r in runs],
                  "server_code_loaded": "prefect.server.api.server" in sys.modules}))
"""


def test_no_server_is_started_where_an_api_is_configured(prefect_api):
    from prefect.settings import PREFECT_API_URL

    assert PREFECT_API_URL.value()  # the test session's Prefect harness
    assert start_if_needed(Path("unused.log")) is None


def test_a_command_without_an_api_runs_its_flow_on_its_own_server_and_stops_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(tmp_path / "home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"})  # as the command sets it
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "server.log")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["value"] == 7 and out["runs"] == ["COMPLETED"], out
    assert out["url"].startswith("http://127.0.0.1:") and not out["server_code_loaded"], out
    assert (tmp_path / "home" / "prefect.db").is_file()  # the run went to this home's database
    assert process_start_ticks(out["pid"]) != int(out["ticks"]), "the temporary server outlived the command"
    assert "All connection attempts failed" not in done.stderr  # nothing sent to a stopped server at exit
    assert (tmp_path / "server.log").is_file()  # the server's own output, kept off the console
