"""GPU check: the training and evaluation paths on a CUDA device, measured against a CPU run.

Takes a finished CPU run of a profile (its base model, shards, stage-1 models and the base model's
evaluation) and the data mirror, and runs on the GPU:

1. ``eval_parity``: the base model's evaluation with ``eval.device=cuda`` against the CPU's metrics
   (largest difference per task; per-item agreement of the log-likelihood and retrieval rows).
2. ``grad_ckpt``: a few stage-1 steps in float32 with and without activation checkpointing; the
   per-step losses must agree (checkpointing recomputes, it must not change the trajectory).
3. ``stage1_bf16``: stage 1 (AlignX and control) under ``mixed_precision=auto`` (bf16 on a GPU that
   has it), its per-step losses against the CPU's float32 log of the same run, and the step time.
4. ``effect``: both stage-1 models through stage 2 and evaluation on the GPU, then the report's
   AlignX-minus-control summary lines (the demo's effect, reproduced in bf16).

Prints one JSON line per check and exits 1 when a check fails.

    python bench/gpu_check.py --run data/runs/demo --profile demo --mirror ../shared/data --out /tmp/gpu
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alignx.artefacts import read_marker  # noqa: E402
from alignx.eval.report import write_report  # noqa: E402
from alignx.eval.runner import METRICS_FILE, evaluate_model  # noqa: E402
from alignx.profiles import load_profile  # noqa: E402
from alignx.stages_and_arms import STAGE1_ARMS  # noqa: E402
from alignx.train.loop import mixed_precision_mode  # noqa: E402
from alignx.train.training_stages import train_stage1, train_stage2  # noqa: E402
from alignx.training_records import read_log, read_run_record  # noqa: E402

FAILED: list[str] = []
DEVICE = "cuda"
QUICK: dict[str, object] = {}  # --dry-run's shorter training


def emit(check: str, ok: bool, **figures) -> None:
    print(json.dumps({"check": check, "ok": ok, **figures}), flush=True)
    if not ok:
        FAILED.append(check)


def _finished(run: Path, pattern: str) -> list[Path]:
    return sorted(p for p in run.glob(pattern) if read_marker(p) is not None)


def pick_inputs(run: Path, cfg) -> dict[str, Path]:
    """The run's base model, the shards and the CPU stage-1 models trained with cfg's stage-1 settings."""
    bases = _finished(run, "models/base-*")
    shards = _finished(run, "shards/*")
    if len(bases) != 1 or len(shards) != 1:
        raise SystemExit(f"{run}: expected one finished base model and one shard set, found {len(bases)} and {len(shards)}")
    wanted = cfg.stage1.model_dump(mode="json")
    picked = {"base": bases[0], "shards": shards[0]}
    for arm in sorted(STAGE1_ARMS):  # alignx, control
        for model in _finished(run, f"models/{arm}-stage1-*"):
            record = read_run_record(model)
            if record["config"] == wanted and Path(record["base_model"]).name == bases[0].name:
                picked[f"cpu_{arm}"] = model
    base_evals = [e for e in _finished(run, "eval/base-*")
                  if Path(json.loads((e / METRICS_FILE).read_text())["model"]["path"]).name == bases[0].name]
    if base_evals:
        picked["cpu_base_eval"] = base_evals[-1]
    return picked


def _items(eval_dir: Path) -> dict[str, list[dict]]:
    out = {}
    for path in sorted((eval_dir / "items").glob("*.jsonl")):
        out[path.stem] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return out


def eval_parity(cpu_eval: Path, gpu_eval: Path) -> None:
    cpu = json.loads((cpu_eval / METRICS_FILE).read_text())
    gpu = json.loads((gpu_eval / METRICS_FILE).read_text())
    worst: dict[str, float] = {}
    for task, metrics in cpu["results"].items():
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and task in gpu["results"]:
                worst[task] = max(worst.get(task, 0.0), abs(value - gpu["results"][task].get(name, math.nan)))
    cpu_items, gpu_items = _items(cpu_eval), _items(gpu_eval)
    agree = {}
    for task, rows in cpu_items.items():
        if task.startswith(("xcopa", "align")) and task in gpu_items:
            key = "pred" if task.startswith("xcopa") else "x2en_top1"
            same = sum(a.get(key) == b.get(key) for a, b in zip(rows, gpu_items[task]))
            agree[task] = same / max(1, len(rows))
    by_kind = {kind: max((v for t, v in worst.items() if t.startswith(kind)), default=None)
               for kind in ("xcopa", "align", "flores", "mgsm")}
    min_agree = min(agree.values()) if agree else None
    ok = (by_kind["xcopa"] is not None and by_kind["xcopa"] <= 0.02 and by_kind["align"] is not None
          and by_kind["align"] <= 0.02 and min_agree is not None and min_agree >= 0.95)
    emit("eval_parity", ok, max_abs_diff=by_kind, min_item_agreement=min_agree)


def _losses(log_path: Path, key: str = "loss") -> list[float]:
    return [r[key] for r in read_log(log_path)]


def grad_ckpt(base: Path, shards: Path, profile: str, mirror: str, out: Path) -> None:
    runs = {}
    for on in (False, True):
        cfg = load_profile(profile, {"data_mirror": mirror, "stage1.train.steps": 5, "stage1.train.warmup_steps": 1,
                                     "stage1.train.mixed_precision": "no",
                                     "stage1.train.gradient_checkpointing": on, "stage1.train.checkpoint_every": 100})
        started = time.perf_counter()
        train_stage1(str(base), shards, cfg, out / f"ckpt-{on}")
        runs[on] = (_losses(out / f"ckpt-{on}" / "train_log.jsonl"), time.perf_counter() - started)
    diff = max(abs(a - b) for a, b in zip(runs[False][0], runs[True][0]))
    emit("grad_ckpt", diff < 1e-3, max_loss_diff=diff, losses_off=runs[False][0], losses_on=runs[True][0],
         seconds_off=round(runs[False][1], 2), seconds_on=round(runs[True][1], 2))


def stage1_bf16(picked: dict[str, Path], profile: str, mirror: str, out: Path) -> dict[str, Path]:
    cfg = load_profile(profile, {"data_mirror": mirror, **QUICK})
    models = {}
    for arm in sorted(STAGE1_ARMS):  # alignx, control
        target = out / f"{arm}-stage1"
        started = time.perf_counter()
        train_stage1(str(picked["base"]), picked["shards"], cfg, target, control=arm == "control")
        seconds = time.perf_counter() - started
        gpu_log = read_log(target / "train_log.jsonl")
        figures = {"arm": arm, "steps": len(gpu_log), "wall_s": round(seconds, 1),
                   "median_step_s": sorted(r["step_s"] for r in gpu_log)[len(gpu_log) // 2],
                   "first": {k: round(gpu_log[0][k], 4) for k in ("loss", "lm", "ctr", "lam")},
                   "last10": {k: round(sum(r[k] for r in gpu_log[-10:]) / 10, 4) for k in ("loss", "lm", "ctr", "lam")}}
        finite = all(math.isfinite(r["loss"]) for r in gpu_log)
        ok = finite and figures["last10"]["loss"] < figures["first"]["loss"]
        cpu_model = picked.get(f"cpu_{arm}")
        if cpu_model is not None:
            cpu_log = read_log(cpu_model / "train_log.jsonl")
            same_batches = all(a["batches"] == b["batches"] for a, b in zip(cpu_log, gpu_log))
            rel_first = abs(gpu_log[0]["loss"] - cpu_log[0]["loss"]) / cpu_log[0]["loss"]
            window = cpu_log[len(gpu_log) - 10:len(gpu_log)]  # the same steps as the GPU's last ten
            cpu_last = sum(r["loss"] for r in window) / len(window)
            figures.update(same_batches_as_cpu=same_batches, first_step_rel_diff=round(rel_first, 5),
                           cpu_last10_loss=round(cpu_last, 4),
                           cpu_median_step_s=sorted(r["step_s"] for r in cpu_log)[len(cpu_log) // 2])
            ok = ok and same_batches and rel_first < 0.01 and abs(figures["last10"]["loss"] - cpu_last) < 0.05 * cpu_last
        emit("stage1_bf16", ok, mixed_precision=mixed_precision_mode(cfg.stage1.train.mixed_precision), **figures)
        models[arm] = target
    return models


def effect(picked: dict[str, Path], stage1: dict[str, Path], profile: str, mirror: str, out: Path,
           gpu_base_eval: Path) -> None:
    cfg = load_profile(profile, {"data_mirror": mirror, "eval.device": DEVICE, **QUICK})
    evals = {"base": gpu_base_eval}
    for arm, model in stage1.items():
        started = time.perf_counter()
        train_stage2(str(model), picked["shards"], cfg, out / f"{arm}-stage2")
        evaluate_model(str(out / f"{arm}-stage2"), cfg, out / f"eval-{arm}")
        evals[arm] = out / f"eval-{arm}"
        print(json.dumps({"arm": arm, "stage2_and_eval_s": round(time.perf_counter() - started, 1)}), flush=True)
    write_report(evals, cfg, out / "report")
    text = (out / "report" / "report.md").read_text(encoding="utf-8")
    summary = [line for line in text.splitlines() if "alignx − control" in line or "alignx - control" in line]
    emit("effect", bool(summary), summary=summary[:12])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished CPU run root, e.g. data/runs/demo")
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--mirror", required=True, help="the data mirror (FLORES, XCOPA, MGSM, ...)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true",
                        help="run every check on the CPU with a few training steps (checks the script, not the GPU)")
    args = parser.parse_args()
    global DEVICE, QUICK
    if not torch.cuda.is_available() and not args.dry_run:
        raise SystemExit("no CUDA device: this check is for a GPU machine (--dry-run runs it on the CPU)")
    DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    QUICK = ({"stage1.train.steps": 12, "stage2.train.steps": 2, "stage2.train.warmup_steps": 1}
             if args.dry_run else {})
    print(json.dumps({"device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu",
                      "torch": torch.__version__, "transformers": transformers.__version__,
                      "bf16": DEVICE == "cuda" and torch.cuda.is_bf16_supported()}), flush=True)
    mirror = str(Path(args.mirror).resolve())
    cfg = load_profile(args.profile, {"data_mirror": mirror})
    picked = pick_inputs(args.run, cfg)
    print(json.dumps({k: str(v) for k, v in picked.items()}), flush=True)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)

    gpu_cfg = load_profile(args.profile, {"data_mirror": mirror, "eval.device": DEVICE})
    started = time.perf_counter()
    evaluate_model(str(picked["base"]), gpu_cfg, args.out / "eval-base")
    print(json.dumps({"base_eval_gpu_s": round(time.perf_counter() - started, 1)}), flush=True)
    if "cpu_base_eval" in picked:
        eval_parity(picked["cpu_base_eval"], args.out / "eval-base")
    grad_ckpt(picked["base"], picked["shards"], args.profile, mirror, args.out)
    stage1 = stage1_bf16(picked, args.profile, mirror, args.out)
    effect(picked, stage1, args.profile, mirror, args.out, args.out / "eval-base")
    print(json.dumps({"failed": FAILED}), flush=True)
    return 1 if FAILED else 0


if __name__ == "__main__":
    raise SystemExit(main())
