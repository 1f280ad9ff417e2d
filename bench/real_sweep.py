"""A small, stated sweep of the `real` profile's stage 1 (SmolLM2-135M-Instruct on the CPU).

Each point is one `alignx pipeline --profile real` run with overrides, on one shared run root, so the
data, the base model, the base model's evaluation and every unchanged arm are cache hits across points
(the control's key ignores lambda_ctr, lambda_lam and tau: a loss-weight point trains AlignX alone).
Evaluation is cut to what the aim is judged on: FLORES, the prompt encoding, at the align layer only
(the forward pass stops there). Prints one JSON line per point: its overrides, wall time, and
AlignX - control top-1 X->en / en->X with their paired bootstrap intervals.

    OMP_NUM_THREADS=2 .venv/bin/python bench/real_sweep.py --points baseline lambda_ctr=1 tau=0.05 lr=2e-4
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# name -> overrides (dotted key -> JSON value); every point also gets the evaluation cut below
POINTS: dict[str, dict[str, str]] = {
    "baseline": {},
    "lambda_ctr=1": {"stage1.lambda_ctr": "1.0"},
    "tau=0.05": {"stage1.tau": "0.05"},
    "lr=2e-4": {"stage1.train.lr": "2e-4"},
    "lr=2e-4,lambda_ctr=1": {"stage1.train.lr": "2e-4", "stage1.lambda_ctr": "1.0"},
    "steps=150": {"stage1.train.steps": "150", "stage1.train.warmup_steps": "15", "stage1.max_examples": "2400"},
    "layer=18": {"stage1.align_layer": "18"},
}
EVAL_CUT = {"eval.alignment.encodings": '["prompt"]'}
SUMMARY = re.compile(r"alignx − control, align_flores_prompt (x2en_top1|en2x_top1): ([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]")


def run_point(name: str, run_root: Path, log_dir: Path) -> dict:
    overrides = {**EVAL_CUT, **POINTS[name], "run_root": json.dumps(str(run_root))}
    layer = POINTS[name].get("stage1.align_layer", "15")
    overrides["eval.alignment.layers"] = f"[{layer}]"
    # `-m` from REPO: this checkout's code (a frozen worktree keeps every point on the same code)
    cmd = [sys.executable, "-m", "alignx.cli", "pipeline", "--profile", "real"]
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={value}"]
    log = log_dir / f"{name}.log"
    start = time.monotonic()
    with log.open("w", encoding="utf-8") as out:
        rc = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"}).returncode
    wall = time.monotonic() - start
    point = {"point": name, "overrides": POINTS[name], "rc": rc, "wall_min": round(wall / 60, 1), "log": str(log)}
    text = log.read_text(encoding="utf-8")
    report = re.findall(r"^report: (.+)$", text, flags=re.M)
    if rc == 0 and report:
        summary = json.loads((Path(report[-1]).parent / "summary.json").read_text(encoding="utf-8"))["summary"]
        for line in summary:
            if m := SUMMARY.search(line):
                point[m[1]] = {"delta": float(m[2]), "ci": [float(m[3]), float(m[4])]}
        point["report"] = report[-1]
    return point


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", nargs="+", default=list(POINTS), choices=list(POINTS))
    parser.add_argument("--run-root", type=Path, default=REPO / "data" / "runs" / "real-sweep")
    args = parser.parse_args()
    log_dir = args.run_root / "sweep-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    for name in args.points:
        point = run_point(name, args.run_root, log_dir)
        print(json.dumps(point), flush=True)
        with (log_dir / "results.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(point) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
