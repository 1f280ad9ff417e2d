"""The GPU acceptance script runs its three checks on the CPU (--dry-run) as it will on a lent GPU:
one JSON line with the figures, exit 1 when a check fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench import gpu_accept

REPO = Path(__file__).resolve().parents[1]


def test_dry_run_runs_every_check_and_reports_its_figures():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_accept.py"), "--dry-run"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] and result["dry_run"]
    train = result["train_1b"]
    assert train["steps"] == 6 and train["tokens_per_s"] > 0 and train["loss_last3"] < train["loss_first3"]
    assert train["plan_gib"] > 0
    assert len(result["bf16_vs_fp32"]["bf16"]) == len(result["bf16_vs_fp32"]["fp32"]) == 6
    assert result["bf16_vs_fp32"]["bf16"] != result["bf16_vs_fp32"]["fp32"]  # bf16 autocast really ran
    assert 0 < result["eval_bf16"]["max_rel_diff"] < 0.02


def test_a_failing_check_fails_the_run_and_the_others_still_report(monkeypatch, capsys):
    def broken(*args):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gpu_accept, "check_eval_bf16", broken)
    monkeypatch.setattr(sys, "argv", ["gpu_accept.py", "--dry-run"])
    assert gpu_accept.main() == 1
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not result["ok"] and result["train_1b"]["ok"] and result["bf16_vs_fp32"]["ok"]
    assert result["eval_bf16"]["problems"] == ["RuntimeError: CUDA error: an illegal memory access was encountered"]


def test_the_card_peak_comes_from_its_own_name():
    assert gpu_accept.peak_tflops("NVIDIA H100 80GB HBM3", None) == 989.0
    assert gpu_accept.peak_tflops("NVIDIA H100 PCIe", None) == 756.0
    assert gpu_accept.peak_tflops("NVIDIA H200", None) == 989.0
    assert gpu_accept.peak_tflops("NVIDIA A100-SXM4-80GB", None) == 312.0
    assert gpu_accept.peak_tflops("Some Future Card", None) is None
    assert gpu_accept.peak_tflops("Some Future Card", 500.0) == 500.0
