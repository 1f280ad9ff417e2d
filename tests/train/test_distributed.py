"""Stage 1 under two processes (``torchrun``, gloo on CPU): both arms train, one process writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from alignx.artefacts import read_marker, verify_artefact
from alignx.records import read_log
from alignx.train.stages import work_dir_for
from tests.train.tiny import LANGS


def test_two_processes_train_both_arms_and_write_each_output_once(tiny_llama_dir, shards, tmp_path):
    cfg = {"name": "ddp", "run_root": str(tmp_path), "languages": list(LANGS),
           "stage1": {"align_layer": 2, "lam_width": 16,
                      "train": {"steps": 4, "micro_batch_size": 4, "lr": 1e-3, "max_length": 160,
                                "checkpoint_every": 2, "log_every": 1}}}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg), encoding="utf-8")
    script = Path(__file__).with_name("distributed_stage1.py")
    (tmp_path / "results").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         str(tiny_llama_dir), str(shards), str(tmp_path / "cfg.json"), str(tmp_path / "out"),
         str(tmp_path / "results")],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(path.read_text()) for path in sorted((tmp_path / "results").glob("*.json"))]
    for arm in ("alignx", "control"):
        ranks = [r for r in lines if r["arm"] == arm]
        assert sorted(r["rank"] for r in ranks) == [0, 1] and {r["world"] for r in ranks} == {2}
        out = tmp_path / "out" / arm
        marker = read_marker(out)
        assert verify_artefact(marker)
        assert {r["fingerprint"] for r in ranks} == {marker.fingerprint}  # both return what rank 0 wrote
        assert [r["step"] for r in read_log(out / "train_log.jsonl")] == [1, 2, 3, 4]
        assert not list(out.glob("rank*"))  # the other process's log stays out of the artefact
        assert not work_dir_for(out).exists()
    assert not list((tmp_path / "out").glob(".*.tmp*"))  # no half-written directory left beside them
