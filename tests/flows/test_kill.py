"""Crash safety: ``kill -9`` of the ``alignx`` command in sharding, stage 1 and evaluation never blocks a rerun.

Each case runs the real command in a subprocess (its own PREFECT_HOME, a temporary Prefect server,
real Parquet, a real tiny model), makes it hang inside the stage (tests/flows/hang.py), kills it with
SIGKILL, and checks: the killed run left its lock (the old hang), its temporary server and other
children are gone, and the same command rerun under a hard timeout completes, leaving no temporary
folder behind. Stage 1 also resumes at its checkpoint and ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alignx.process_identity import process_start_ticks
from alignx.watchdog import children_of

REPO = Path(__file__).resolve().parents[2]
RERUN_TIMEOUT_S = 120
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("prefect-home")
    out = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    out.update({
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "ALIGNX_LOCK_DIR": str(home / "locks"),
        "HF_HUB_OFFLINE": "1",
    })
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """One run root for the module: later cases reuse the data and base model of earlier ones."""
    return tmp_path_factory.mktemp("kill") / "run"


def _base_model(root: Path, env: dict[str, str]) -> Path:
    models = root / "models"
    if not models.is_dir() or not any(p.name.startswith("base-") for p in models.iterdir()):
        _run(["train", "bootstrap"], root, env, timeout=300)
    return next(p for p in models.iterdir() if p.name.startswith("base-"))


def _args(command: list[str], root: Path) -> list[str]:
    return [*command, "--profile", "smoke", "--set", f"run_root={root}"]


def _run(command: list[str], root: Path, env: dict[str, str], timeout: float = RERUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *_args(command, root)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"alignx {' '.join(command)} failed:\n{proc.stderr[-3000:]}"
    return proc


def _start_hanging(point: str, command: list[str], root: Path, env: dict[str, str],
                   stderr: int = subprocess.DEVNULL) -> subprocess.Popen:
    """Start the command and wait until it hangs inside the stage (holding its lock)."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.flows.hang", point, *_args(command, root)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    deadline = time.monotonic() + 300
    line = ""
    while time.monotonic() < deadline and "HANGING" not in line:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
    assert "HANGING" in line, f"alignx {' '.join(command)} never reached the hang point {point!r} (rc {proc.poll()})"
    return proc


def _kill_while_hanging(point: str, command: list[str], root: Path, env: dict[str, str]) -> int:
    """Start the command, wait until it hangs inside the stage, SIGKILL it; return its pid."""
    proc = _start_hanging(point, command, root, env)
    children = children_of(proc.pid)
    assert children, "the command runs no temporary server"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(process_start_ticks(p) == t for p, t in children.items()):
        time.sleep(0.5)
    stray = [p for p, t in children.items() if process_start_ticks(p) == t]
    assert not stray, f"processes of the killed command still running: {stray}"
    return proc.pid


def _dead_holders_locks(env: dict[str, str], pid: int) -> list[Path]:
    return [p for p in Path(env["ALIGNX_LOCK_DIR"]).glob("*.lock") if json.loads(p.read_text() or "{}").get("pid") == pid]


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]


def test_kill_in_sharding_then_rerun(root, env):
    pid = _kill_while_hanging("shard", ["data"], root, env)
    assert _dead_holders_locks(env, pid), "the killed run left no lock (the case under test)"
    assert _temporaries(root / "shards"), "the killed run left no temporary shard folder (the case under test)"
    _run(["data"], root, env)
    manifests = list((root / "shards").glob("*/_manifest.json"))
    assert len(manifests) == 1 and json.loads(manifests[0].read_text())["rows"]
    assert not _temporaries(root), f"temporaries left: {_temporaries(root)}"
    assert not _dead_holders_locks(env, pid)


def test_kill_in_stage1_resumes_at_the_checkpoint(root, env):
    _base_model(root, env)
    pid = _kill_while_hanging("stage1-checkpoint", ["train", "stage1", "--arm", "alignx"], root, env)
    assert _dead_holders_locks(env, pid)
    done = _run(["train", "stage1", "--arm", "alignx"], root, env)
    model = Path(done.stdout.split("checkpoint:", 1)[1].split()[0])
    record = json.loads((model / "alignx.json").read_text())
    assert record["resumed_from"] == 4, record.get("resumed_from")  # smoke: checkpoint_every 4 of 8 steps
    assert not _temporaries(root), f"temporaries left: {_temporaries(root)}"

    # checkpoint_every changes bookkeeping, not the trajectory: a separate, uninterrupted run of it
    uninterrupted = _run(["train", "stage1", "--arm", "alignx", "--set", "stage1.train.checkpoint_every=100"],
                         root, env, timeout=300)
    ref_model = Path(uninterrupted.stdout.split("checkpoint:", 1)[1].split()[0])
    assert ref_model != model
    assert json.loads((ref_model / "alignx.json").read_text())["resumed_from"] is None
    assert (model / "model.safetensors").read_bytes() == (ref_model / "model.safetensors").read_bytes()


def test_kill_in_evaluation_then_rerun(root, env):
    base = _base_model(root, env)
    command = ["eval", "--model", str(base), "--benchmarks", "xcopa"]
    pid = _kill_while_hanging("evaluate", command, root, env)  # in the alignment, after XCOPA finished
    assert _dead_holders_locks(env, pid)
    finished = {p.stem: json.loads(p.read_text())["value"] for p in root.glob("eval/.*.parts/*.json")}
    assert set(finished) == {"xcopa_sw", "xcopa_zh"}, finished  # kept by the killed attempt
    done = _run(command, root, env)
    metrics = Path(done.stdout.split("metrics:", 1)[1].split()[0])
    doc = json.loads(metrics.read_text())
    assert "alignment" in doc
    # the rerun read XCOPA from the killed attempt instead of scoring it again: its measured seconds came along
    assert {t: doc["seconds"][t] for t in finished} == {t: v["seconds"] for t, v in finished.items()}
    assert not list(root.glob("eval/.*.parts")), "the finished parts outlived the written evaluation"
    assert not _temporaries(root), f"temporaries left: {_temporaries(root)}"


def test_bad_input_is_one_line_without_traceback(tmp_path, env):
    mirror = tmp_path / "mirror"
    for pair in ("deu-eng", "eng-zho", "eng-swa"):
        src = REPO.parent / "shared" / "data" / "tatoeba" / pair
        (mirror / "tatoeba" / pair).mkdir(parents=True)
        for file in src.iterdir():
            (mirror / "tatoeba" / pair / file.name).write_bytes(file.read_bytes())
    bad = mirror / "tatoeba" / "deu-eng" / "tatoeba.deu-eng.deu"
    lines = bad.read_text(encoding="utf-8").split("\n")
    lines[4] += "\x00"
    bad.write_text("\n".join(lines), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *_args(["data"], tmp_path / "run"),
                           "--set", f"data_mirror={mirror}", "--set", "data.filters.control_chars=fail"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and str(bad) in error[0] and "line 5" in error[0], proc.stderr[-2000:]
    log = Path(proc.stderr.split("full log and traceback:", 1)[1].split()[0])
    assert "Traceback" in log.read_text(encoding="utf-8")


def test_sigterm_stops_a_run_cleanly(root, env):
    """SIGTERM (kill, a scheduler's stop) ends the command at once: exit 143, its lock released, its
    temporary server gone, nothing half-written left."""
    import signal

    base = _base_model(root, env)
    command = ["eval", "--model", str(base), "--benchmarks", "xcopa", "--name", "sigterm"]
    proc = _start_hanging("evaluate", command, root, env, stderr=subprocess.PIPE)
    children = children_of(proc.pid)
    assert _dead_holders_locks(env, proc.pid), "the run holds no lock while evaluating (the case under test)"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert not _dead_holders_locks(env, proc.pid), "a run stopped by SIGTERM left its lock"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(process_start_ticks(p) == t for p, t in children.items()):
        time.sleep(0.5)
    assert not [p for p, t in children.items() if process_start_ticks(p) == t]
    assert not _temporaries(root), f"temporaries left: {_temporaries(root)}"


def test_sigterm_ends_a_pipeline_whose_output_reader_is_gone(root, env):
    """SIGTERM while the arm chains train in the pipeline's threads, after whoever read the run's output
    died: the process ends at once with 143. Before, leaving the chains' task runner joined the training
    threads (the process trained on, silent), and rich's console turned the broken pipe into SystemExit(1)
    in the middle of recording the stop."""
    import signal

    _base_model(root, env)
    command = ["pipeline", "--arms", "alignx,control", "--stop-after", "stage1"]
    proc = _start_hanging("stage1-checkpoint", command, root, env, stderr=subprocess.PIPE)
    children = children_of(proc.pid)
    proc.stdout.close()
    proc.stderr.close()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("alignx pipeline kept running 60 s after SIGTERM with its output pipe gone") from None
    assert code == 143
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(process_start_ticks(p) == t for p, t in children.items()):
        time.sleep(0.5)
    assert not [p for p, t in children.items() if process_start_ticks(p) == t], "its temporary server outlived it"
