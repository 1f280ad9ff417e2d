"""Evaluate finished checkpoints of the real-downstream profile with the library's evaluate_model (the
function the evaluate task runs), one after another, timing each; then the report over every arm.

    python bench/real_downstream_eval.py OUT name=DIR [name=DIR ...]

FLORES_LIMIT (default 250) sentences per direction; NO_ALIGNMENT=1 skips the alignment sets;
ALIGNMENT_FROM=DIR then copies the alignment tasks (items and metrics) of the same model's earlier
evaluation in DIR/<name> (same code, same sentences: the figures are the ones a rerun would compute).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from alignx.profiles import load_profile
from alignx.eval.report import write_report
from alignx.eval.runner import evaluate_model


def copy_alignment(src: Path, out: Path, model: str) -> None:
    old, new = (json.loads((d / "metrics.json").read_text()) for d in (src, out))
    if old["model"]["path"] != new["model"]["path"] or old["model"]["fingerprint"] != new["model"]["fingerprint"]:
        raise SystemExit(f"{src}: evaluated another model ({old['model']}), not {new['model']}")
    tasks = [t for t in old["tasks"] if t.startswith("align_")]
    for t in tasks:
        (out / "items" / f"{t}.jsonl").write_bytes((src / "items" / f"{t}.jsonl").read_bytes())
        for key in ("tasks", "results", "n-samples", "seconds"):
            new[key][t] = old[key][t]
    for g in {old["tasks"][t]["group"] for t in tasks}:
        new["groups"][g] = old["groups"][g]
    for key in ("alignment", "alignment_layer", "alignment_layers", "num_layers"):
        new[key] = old[key]
    new["config"]["eval"]["alignment"] = old["config"]["eval"]["alignment"]
    new["alignment_copied_from"] = str(src)
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(new, indent=1, sort_keys=True))
    tmp.replace(out / "metrics.json")
    print(f"{out.name}: alignment copied from {src}", flush=True)


def main() -> int:
    out_root = Path(sys.argv[1])
    models = dict(a.split("=", 1) for a in sys.argv[2:])
    overrides = {"eval.limit": {"flores": int(os.environ.get("FLORES_LIMIT", "250"))}}
    if os.environ.get("NO_ALIGNMENT"):
        overrides["eval.alignment.sets"] = []
    cfg = load_profile("real-downstream", overrides)
    for name, model in models.items():
        out = out_root / name
        if (out / "metrics.json").is_file():
            print(f"{name}: done already", flush=True)
            continue
        start = time.monotonic()
        last = [0.0]

        def progress(done, total, extra=None):
            now = time.monotonic()
            if now - last[0] > 30 or done >= total:
                last[0] = now
                print(f"{name}: {done}/{total} {extra or ''} {now - start:.0f}s", flush=True)

        evaluate_model(model, cfg, out, progress=progress)
        if os.environ.get("ALIGNMENT_FROM"):
            copy_alignment(Path(os.environ["ALIGNMENT_FROM"]) / name, out, model)
        print(json.dumps({"evaluated": name, "wall_s": round(time.monotonic() - start, 1)}), flush=True)
    evals = {n: out_root / n for n in ("base", "sft", "control", "alignx") if (out_root / n / "metrics.json").is_file()}
    if "alignx" in evals and ({"control", "sft"} & set(evals)):  # a comparison the report makes
        art = write_report(evals, cfg, out_root / "report")
        print("report:", art.meta["report"], flush=True)
        print("\n".join(art.meta["summary"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
