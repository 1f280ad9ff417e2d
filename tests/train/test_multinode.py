"""Two nodes: two torchrun agents on this machine, each one "node" of one process, meet at a c10d
rendezvous (the second joins with `alignx join`), shard under a two-dimensional mesh (HSDP) and train
the trajectory one process trains at the same global batch."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from alignx import launch as launcher
from alignx.artefacts import verify_artefact
from alignx.profiles import parse_config
from alignx.train.training_stages import train_stage1
from alignx.training_records import read_log, read_run_record
from tests.train.tiny import LANGS

pytestmark = pytest.mark.slow  # two agents and a rendezvous


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cfg(run_root: Path, nodes: int):
    launch = {"nodes": nodes, "rdzv_endpoint": f"127.0.0.1:{_free_port()}"} if nodes > 1 else {}
    return parse_config({
        "name": "nodes", "languages": list(LANGS), "run_root": str(run_root), "launch": launch,
        "stage1": {"align_layer": 2, "lam_width": 16,
                   "train": {"steps": 3, "micro_batch_size": 4, "global_batch_size": 8, "lr": 1e-3,
                             "max_length": 160, "checkpoint_every": 2, "log_every": 1, "sharding": "fsdp",
                             "mixed_precision": "no"}}})


def test_two_nodes_meet_and_train_the_one_process_trajectory(tiny_llama_dir, shards, tmp_path):
    with pytest.raises(ValueError, match="launch.nodes=2 needs launch.rdzv_endpoint"):
        parse_config({"name": "x", "launch": {"nodes": 2}})
    cfg = _cfg(tmp_path / "two", 2)
    out = tmp_path / "two" / "alignx"
    args = {"model": str(tiny_llama_dir), "shards": str(shards), "out": str(out), "control": False}
    lines: list[str] = []
    result: list = []

    def first_node() -> None:
        try:
            result.append(launcher.run_stage("stage1", args, cfg, on_line=lines.append))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result.append(exc)

    thread = threading.Thread(target=first_node, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not any("alignx join" in line for line in lines) and time.monotonic() < deadline:
        time.sleep(0.2)
    call = re.search(r"alignx join (\S+)", "\n".join(lines))
    assert call, lines
    peer = subprocess.run([sys.executable, "-m", "flows.cli", "join", call[1]], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[2])
    thread.join(300)
    assert peer.returncode == 0, peer.stdout[-3000:] + peer.stderr[-2000:]
    assert "joining stage1" in peer.stdout
    assert result and not isinstance(result[0], BaseException), (result, lines[-30:])
    assert verify_artefact(result[0])
    assert any("--nnodes=2" in line and "--rdzv-backend=c10d" in line for line in lines)
    assert any("FSDP mesh: replicate 2 (nodes) x shard 1" in line for line in lines), lines[-30:]

    one = tmp_path / "one" / "alignx"
    train_stage1(str(tiny_llama_dir), shards, _cfg(tmp_path / "one", 1), one)
    a, b = read_log(one / "train_log.jsonl"), read_log(out / "train_log.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3] and read_run_record(out)["steps"] == 3
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) < 1e-4, (x, y)
    wa, wb = load_file(one / "model.safetensors"), load_file(out / "model.safetensors")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4


def test_join_refuses_a_missing_call_file(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "join", str(tmp_path / "gone.json")],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 2 and "no readable stage call" in proc.stderr and "gone.json" in proc.stderr
