"""End-to-end driver, run in its own process by the e2e tests: a real `prefect server`, a process worker and
the deployments from prefect.yaml, then one part of the story:

- ``ui``: the schedule survives a redeploy; the run form in a browser, a pipeline run that fails on a
  broken benchmark file, its repair and Retry of the same flow run (tests/e2e/test_e2e_ui.py);
- ``crash``: ``kill -9`` of a run in stage 1 and its Retry (tests/e2e/test_e2e_crash.py);
- ``dispatch``: the heavy stages dispatched to the GPU pool's deployments, and a failing child
  (tests/e2e/test_e2e_dispatch.py).

Each part has its own PostgreSQL-backed server and run root, so the test processes run them side by side.
Prints one JSON object with what it observed; the test asserts on it. Every process it starts is
stopped in ``finally`` by process id.

    python tests/e2e/driver.py WORK MIRROR {ui,crash,dispatch}
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
if str(REPO) not in sys.path:  # run as a script: tests.e2e.ui is imported from the checkout
    sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"prefect server at {url} not healthy after {timeout}s")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class Postgres:
    """A private PostgreSQL cluster on loopback for the Prefect server, as a team runs it (Debian's server
    binaries; the cluster's files in a temporary folder the ``postgres`` user owns, removed at ``stop``)."""

    def __init__(self):
        import pwd
        import shutil
        import tempfile

        found = shutil.which("initdb") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
        if not found:
            raise RuntimeError("PostgreSQL server binaries not found (initdb): apt-get install postgresql "
                               "(make test installs it)")
        self.bin = Path(os.path.realpath(found)).parent
        user = pwd.getpwnam("postgres")
        self._ids = (user.pw_uid, user.pw_gid)
        self.root = Path(tempfile.mkdtemp(prefix="alignx-e2e-pg-"))
        os.chown(self.root, *self._ids)
        self.data, self.port = self.root / "data", free_port()
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "start", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off")
        self.sql("CREATE DATABASE prefect")
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/prefect"

    def _demote(self) -> None:
        os.setgid(self._ids[1])
        os.setuid(self._ids[0])

    def _run(self, program: str, *args: str) -> str:
        done = subprocess.run([str(self.bin / program), *args], preexec_fn=self._demote if os.geteuid() == 0 else None,
                              capture_output=True, text=True, cwd=self.root, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout

    def sql(self, statement: str, database: str = "postgres") -> str:
        return self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
                         "-tAc", statement).strip()

    def stop(self) -> None:
        import shutil

        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def main(work: Path, mirror: Path, part: str) -> dict:
    if part not in ("ui", "crash", "dispatch"):
        raise SystemExit(f"part must be 'ui', 'crash' or 'dispatch', not {part!r}")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    database = Postgres()
    env = {
        **os.environ,
        "PREFECT_API_DATABASE_CONNECTION_URL": database.url,
        # as a team runs it: each process its own Prefect home, the result storage (task results and
        # cache records) on a path every worker reaches
        "PREFECT_HOME": str(work / "prefect-home"),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(work / "shared-results"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "ALIGNX_LOCK_DIR": str(work / "locks"),
        "PREFECT_LOGGING_LEVEL": "INFO",
        "HF_HUB_OFFLINE": "1",
    }
    os.environ.update(env)  # before prefect is imported below
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    server = worker = gpu_worker = None
    out: dict = {"api": api}
    try:
        server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                  env=env, stdout=open(logs / "server.log", "w"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
        wait_healthy(api, 120)
        subprocess.run([str(BIN / "alignx"), "deploy"], env=env, check=True, cwd=REPO,
                       stdout=open(logs / "deploy.log", "w"), stderr=subprocess.STDOUT)
        worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "alignx-cpu", "--type", "process"],
                                  env={**env, "PREFECT_HOME": str(work / "home-cpu-worker")}, cwd=REPO, stdout=open(logs / "worker.log", "w"),
                                  stderr=subprocess.STDOUT, start_new_session=True)

        from prefect.client.orchestration import get_client

        if part == "crash":
            out["crash"] = crash_then_retry(work, mirror, worker)
            return out
        if part == "dispatch":
            gpu_worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "alignx-gpu", "--type", "process"],
                                          env={**env, "PREFECT_HOME": str(work / "home-gpu-worker")}, cwd=REPO, stdout=open(logs / "gpu-worker.log", "w"),
                                          stderr=subprocess.STDOUT, start_new_session=True)
            out["dispatch"] = dispatch_to_deployments(work, mirror)
            return out

        with get_client(sync_client=True) as client:
            deployments = client.read_deployments()
            out["deployments"] = sorted(
                f"{client.read_flow(d.flow_id).name}/{d.name}" for d in deployments)
            pipe = next(d for d in deployments if d.name == "alignx-pipeline")
            out["schedule_active"] = [s.active for s in pipe.schedules]
            # a user switches the weekly retraining on in the UI; a redeploy must keep it on
            for schedule in pipe.schedules:
                client.update_deployment_schedule(pipe.id, schedule.id, active=True)
        subprocess.run([str(BIN / "alignx"), "deploy"], env=env, check=True, cwd=REPO,
                       stdout=open(logs / "redeploy.log", "w"), stderr=subprocess.STDOUT)
        with get_client(sync_client=True) as client:
            pipe = next(d for d in client.read_deployments() if d.name == "alignx-pipeline")
            out["schedule_active_after_redeploy"] = [s.active for s in pipe.schedules]
            for schedule in pipe.schedules:  # off again: no scheduled run may start during the test
                client.update_deployment_schedule(pipe.id, schedule.id, active=False)

        # In the UI: the pipeline's run form (profile smoke, every arm), then a benchmark file breaks
        # while the run trains (after its preflight, before its evaluations), then Retry on its page.
        from tests.e2e.ui import Browser

        browser = Browser(f"http://127.0.0.1:{port}")
        try:
            out["ui"] = first_run_and_retry_in_the_ui(browser, work, mirror, out)
        except Exception:
            browser.shot("failed-here")  # what the page showed when a step failed
            raise
        finally:
            browser.close()
        return out
    finally:
        try:  # what the server stored went to Postgres
            out["database"] = {"flow_runs": int(database.sql("SELECT count(*) FROM flow_run", "prefect") or 0),
                               "version": database.sql("SHOW server_version")}
        except (RuntimeError, ValueError) as exc:
            out["database"] = {"error": str(exc)[-500:]}
        stop(gpu_worker)
        stop(worker)
        stop(server)
        database.stop()
        for name in ("server.log", "worker.log", "gpu-worker.log", "deploy.log"):
            path = logs / name
            if path.exists():
                out.setdefault("log_tails", {})[name] = path.read_text(errors="replace")[-3000:]


def first_run_and_retry_in_the_ui(browser, work: Path, mirror: Path, out: dict) -> dict:
    """Fill the run form in the browser, break a benchmark file mid-run, press Retry; record what the
    API and the pages show."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter, FlowRunFilterId

    ui: dict = {}
    bench = mirror / "xcopa" / "val.zh.jsonl"
    saved = bench.read_bytes()
    with get_client(sync_client=True) as client:
        pipe = next(d for d in client.read_deployments() if d.name == "alignx-pipeline")
        # the arms in the overrides box: base, the control and AlignX (the SFT-only chain adds time, not coverage)
        browser.run_pipeline_from_form(pipe.id, "smoke", {"run_root": str(work / "run"), "data_mirror": str(mirror),
                                                          "arms": ["base", "control", "alignx"]})
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["alignx-pipeline"])))
        assert len(runs) == 1, f"the form created {len(runs)} runs"
        run = runs[0]
        ui["form_parameters"] = run.parameters
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            names = {t.name.split("-")[0] for t in client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))}
            if "collect" in names or client.read_flow_run(run.id).state.is_final():  # the preflight has passed
                break
            time.sleep(0.2)
        bench.unlink()
        bench.mkdir()
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and not client.read_flow_run(run.id).state.is_final():
            time.sleep(2)
        run = client.read_flow_run(run.id)
    out["first_state"] = run.state.type.value
    out["flow_run_name"] = run.name
    out["first_message"] = run.state.message or ""
    ui["failed_page"] = browser.flow_run_page(run.id, "failed-run")[:3000]

    bench.rmdir()
    bench.write_bytes(saved)
    retried_at = time.time()
    browser.retry(run.id)
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            fr = client.read_flow_run(run.id)
            if fr.state.is_final() and fr.run_count > 1:
                break
            time.sleep(2)
        out["retry_state"] = fr.state.type.value
        out["retry_message"] = fr.state.message or ""
        out["run_count"] = fr.run_count
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        after = [t for t in task_runs if t.created and t.created.timestamp() >= retried_at - 1]
        out["retry_task_states"] = sorted(f"{t.name.rsplit('-', 1)[0]}:{t.state.name}" for t in after)
        out["task_run_names"] = sorted({t.name for t in task_runs})
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        out["artifact_keys"] = sorted({a.key for a in artifacts if a.key})
        report = next((a for a in artifacts if a.key == "alignx-report"), None)
        out["report_excerpt"] = (report.data or "")[:2000] if report else ""
        out["report_embedded_plots"] = (report.data or "").count("](data:image/png;base64,") if report else 0
    ui["completed_page"] = browser.flow_run_page(run.id, "retried-run")[:3000]
    ui["report_page"] = browser.report_text(run.id)[:6000]
    ui["report_images"] = browser.images
    return ui


def retry_and_wait(client, run_id, timeout: float):
    """What the UI's Retry does (AwaitingRetry, forced); wait until the retried run ends. Returns the flow run."""
    from prefect.states import AwaitingRetry

    client.set_flow_run_state(run_id, AwaitingRetry(), force=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fr = client.read_flow_run(run_id)
        if fr.state.is_final() and fr.run_count > 1:
            break
        time.sleep(2)
    return fr


def flow_run_processes(worker: subprocess.Popen) -> list[int]:
    """The worker's child processes that run a flow (``python -m prefect.engine``)."""
    from alignx.watchdog import children_of

    found = []
    for pid in children_of(worker.pid):
        try:
            if b"prefect.engine" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


def crash_then_retry(work: Path, mirror: Path, worker: subprocess.Popen) -> dict:
    """kill -9 a pipeline deployment run in stage 1 after its first checkpoint, then Retry it from the API.

    The killed attempt holds the stage's lock; the retry must break it, mark the dead attempt's task
    run Crashed, resume at the checkpoint and complete.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment

    out: dict = {}
    overrides = {"run_root": str(work / "run"), "data_mirror": str(mirror),
                 "stage1.train.steps": 40, "stage1.train.checkpoint_every": 5}
    params = {"params": {"profile": "smoke", "arms": ["alignx"], "stop_after": "stage1", "overrides": overrides}}
    run = run_deployment("pipeline/alignx-pipeline", parameters=params, timeout=0)
    checkpoints = work / "run" / "models"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not list(checkpoints.glob(".alignx-stage1-*.work/checkpoint*")):
        time.sleep(0.2)
    victims = flow_run_processes(worker)
    out["killed"] = len(victims)
    worker_log = work / "logs" / "worker.log"
    logged_before_kill = worker_log.stat().st_size
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    out["locks_after_kill"] = len(list((work / "locks").glob("*.lock")))
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not client.read_flow_run(run.id).state.is_final():
            time.sleep(1)
        out["killed_state"] = client.read_flow_run(run.id).state.type.value
        # the runner, then the worker, report the crash: a Retry between the two is overwritten, so wait
        # for the worker's own line about it (at most 20 s)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "prefect.flow_runs.worker" not in \
                worker_log.read_bytes()[logged_before_kill:].decode(errors="replace"):
            time.sleep(0.5)
        time.sleep(1)
        retried_at = time.time()
        fr = retry_and_wait(client, run.id, 600)
        out["retry_s"] = round(time.time() - retried_at, 1)
        out["retry_state"] = fr.state.type.value
        out["retry_message"] = fr.state.message or ""
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        dead_attempt = [t for t in task_runs if t.created and t.created.timestamp() < retried_at]
        out["dead_attempt_states"] = sorted(t.state.type.value for t in dead_attempt if t.name.startswith("stage1-"))
        out["dead_attempt_left_running"] = sorted(t.name for t in dead_attempt if t.state.type.value == "RUNNING")
    models = [p for p in checkpoints.glob("alignx-stage1-*") if (p / "alignx.json").is_file()]
    records = [json.loads((p / "alignx.json").read_text()) for p in models]
    out["resumed_from"] = [r.get("resumed_from") for r in records if r.get("steps") == 40]
    return out


def dispatch_to_deployments(work: Path, mirror: Path) -> dict:
    """The paper profile's mode: the pipeline (CPU pool) runs each heavy stage as a child run of its
    deployment on the GPU pool; the stage-1 checkpoint is evaluated too. Then a child that fails fails
    the parent with the child's message."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter
    from prefect.deployments import run_deployment

    out: dict = {}
    overrides = {"run_root": str(work / "run"), "data_mirror": str(mirror), "dispatch": "deployments",
                 "eval.include_stage1": True}
    params = {"params": {"profile": "smoke", "arms": ["alignx"], "overrides": overrides}}
    run = run_deployment("pipeline/alignx-pipeline", parameters=params, timeout=900, poll_interval=2)
    out["state"], out["message"] = run.state.type.value, run.state.message or ""

    def children(parent) -> list:
        with get_client(sync_client=True) as client:
            # run_deployment from a task: the child's parent is that task run, inside this flow run
            task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [parent.id]}))
            return [fr for t in task_runs for fr in client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_task_run_id={"any_": [t.id]}))]

    kids = children(run)
    out["children"] = sorted(f"{k.name.rsplit('-', 2)[0]}@{k.work_pool_name}:{k.state.type.value}" for k in kids)

    overrides = {**overrides, "stage1.train.max_length": 8}  # passes the preflight; the stage-1 child refuses it
    params = {"params": {"profile": "smoke", "arms": ["alignx"], "overrides": overrides}}
    run = run_deployment("pipeline/alignx-pipeline", parameters=params, timeout=900, poll_interval=2)
    out["failing_state"], out["failing_message"] = run.state.type.value, run.state.message or ""
    out["failing_children"] = sorted(f"{k.name.rsplit('-', 2)[0]}:{k.state.type.value}" for k in children(run))
    return out


def run_part(tmp_path: Path, mirror: Path, part: str, timeout: float) -> dict:
    """Run one part of the story in a fresh process (its own PREFECT_* environment) on a copy of the
    mirror's sets the smoke profile reads; the driver's JSON result, or an assertion with its output."""
    from tests.flows.conftest import copy_mirror

    local_mirror = copy_mirror(mirror, tmp_path / "mirror", ["deu-eng", "eng-zho", "eng-swa"], ["flores200", "xcopa", "mgsm"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "e2e" / "driver.py"), str(tmp_path), str(local_mirror), part],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("E2E-RESULT ")]
    assert proc.returncode == 0 and lines, f"driver ({part}) failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return json.loads(lines[-1][len("E2E-RESULT "):])


if __name__ == "__main__":
    result = main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
    print("E2E-RESULT " + json.dumps(result))
