"""Stage 1 under two processes (``torchrun``, gloo on CPU): both arms train, one process writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from alignx.artefacts import read_marker, verify_artefact
from alignx.profiles import parse_config
from alignx.train.training_stages import train_stage1, work_dir_for
from alignx.training_records import read_log
from tests.train.tiny import LANGS


def _launch(nproc: int, cfg: dict, tmp_path: Path, tiny_llama_dir, shards, name: str) -> Path:
    """``torchrun --nproc_per_node nproc`` of stage 1 (both arms); returns its folder."""
    run = tmp_path / name
    (run / "results").mkdir(parents=True)
    (run / "cfg.json").write_text(json.dumps({**cfg, "run_root": str(run)}), encoding="utf-8")
    script = Path(__file__).with_name("distributed_stage1.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), str(script),
         str(tiny_llama_dir), str(shards), str(run / "cfg.json"), str(run / "out"), str(run / "results")],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_two_processes_train_both_arms_and_write_each_output_once(tiny_llama_dir, shards, tmp_path):
    """Two processes at a global batch of 8 (micro 4, no accumulation) write each arm once; one process
    at the same global batch (micro 4, accumulation 2) trains the same trajectory."""
    cfg = {"name": "ddp", "languages": list(LANGS),
           "stage1": {"align_layer": 2, "lam_width": 16,
                      "train": {"steps": 4, "micro_batch_size": 4, "global_batch_size": 8, "lr": 1e-3,
                                "max_length": 160, "checkpoint_every": 2, "log_every": 1}}}
    two = _launch(2, cfg, tmp_path, tiny_llama_dir, shards, "two")
    lines = [json.loads(path.read_text()) for path in sorted((two / "results").glob("*.json"))]
    for arm in ("alignx", "control"):
        ranks = [r for r in lines if r["arm"] == arm]
        assert sorted(r["rank"] for r in ranks) == [0, 1] and {r["world"] for r in ranks} == {2}
        out = two / "out" / arm
        marker = read_marker(out)
        assert verify_artefact(marker)
        assert {r["fingerprint"] for r in ranks} == {marker.fingerprint}  # both return what rank 0 wrote
        assert [r["step"] for r in read_log(out / "train_log.jsonl")] == [1, 2, 3, 4]
        assert not list(out.glob("rank*"))  # the other process's log stays out of the artefact
        assert not work_dir_for(out).exists()
    assert not list((two / "out").glob(".*.tmp*"))  # no half-written directory left beside them

    one = tmp_path / "one"  # one process, in this one: micro-batches of 4, accumulated two at a time
    for arm in ("alignx", "control"):
        train_stage1(str(tiny_llama_dir), shards, parse_config({**cfg, "run_root": str(one)}), one / "out" / arm,
                     control=arm == "control")
    for arm in ("alignx", "control"):
        a, b = read_log(one / "out" / arm / "train_log.jsonl"), read_log(two / "out" / arm / "train_log.jsonl")
        # rank 0 logs the losses of its own micro-batches: compare the batches both saw at each step
        assert [r["batches"][0] for r in a] == [r["batches"][0] for r in b], arm
        # the models after 4 optimizer steps agree: the same micro-batches make each step's gradient,
        # averaged over processes (2 x 1) or accumulated (1 x 2); only float summation order differs
        from safetensors.torch import load_file

        wa, wb = load_file(one / "out" / arm / "model.safetensors"), load_file(two / "out" / arm / "model.safetensors")
        assert wa.keys() == wb.keys()
        moved = max((wa[k] - wb[k]).abs().max().item() for k in wa)
        assert moved < 1e-4, f"{arm}: 1 and 2 processes at global batch 8 differ by {moved:.2e}"
        base = load_file(Path(tiny_llama_dir) / "model.safetensors")
        assert max((wa[k] - base[k]).abs().max().item() for k in base if k in wa) > 1e-3  # it did train
