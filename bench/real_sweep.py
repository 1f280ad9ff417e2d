"""A stated sweep of the `real-downstream` profile, scored on the development set, never on the test.

Protocol (README, "Choosing settings"): every point trains the control and AlignX arms with its
overrides (stage 1, then stage 2) and is scored on NTREX-128, which the runs never train on:
translation en<->X (chrF++ per segment, paired intervals) and top-1 retrieval in the prompt encoding.
FLORES is the test: only the final report (`--final POINT`: the profile's own evaluation, every arm) reads
it, for one point chosen on the development figures, and the choice is recorded before it runs. The
script refuses a point whose evaluation would read a set the report reads, or a set the run trains on.

Each point is one pipeline run on one shared run root, so the data, the base model and every
unchanged stage are cache hits across points (the control's stage 1 ignores the loss weights). Prints
one JSON line per point and appends it to `<run root>/sweep-logs/results.jsonl`: every configuration
tried is kept with its development figures. The same line goes to this checkout's
`docs/real-sweep/points.jsonl`, and the final's choice to `docs/real-sweep/final.json`: committed, they
outlive the run root (a machine's disk), so the table and the read-once rule hold across machines.

    OMP_NUM_THREADS=2 .venv/bin/python bench/real_sweep.py --points baseline lambda_ctr=0.3 steps=400
    .venv/bin/python bench/real_sweep.py --table     # every point run so far, and which meets the aim
    OMP_NUM_THREADS=2 .venv/bin/python bench/real_sweep.py --final lambda_ctr=3   # the test, once, for one point
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
sys.path.insert(0, str(REPO))

from alignx.artefacts import atomic_write_json  # noqa: E402
from alignx.config import PipelineConfig  # noqa: E402
from alignx.profiles import load_profile  # noqa: E402

PROFILE = "real-downstream"
# name -> overrides (dotted key -> JSON value); every point also gets DEV_EVAL
POINTS: dict[str, dict[str, str]] = {
    "baseline": {},
    "lambda_ctr=0.3": {"stage1.lambda_ctr": "0.3"},
    "lambda_ctr=3": {"stage1.lambda_ctr": "3.0"},
    "lambda_ctr=10": {"stage1.lambda_ctr": "10.0"},
    # the language-matching loss keeps languages apart in the final layer: does more of it keep the en->X
    # quality that a strong contrastive weight costs?
    "lambda_ctr=3,lambda_lam=2": {"stage1.lambda_ctr": "3.0", "stage1.lambda_lam": "2.0"},
    "steps=400": {"stage1.train.steps": "400", "stage1.train.warmup_steps": "40", "stage1.max_examples": "6400"},
    "layer=22": {"stage1.align_layer": "22"},
    "stage2_steps=160": {"stage2.train.steps": "160", "stage2.translation_pairs_per_lang": "320"},
    # a third language the model is weak in, with few training pairs (Tatoeba en-sw: 387); XCOPA has sw
    "languages=de,zh,sw": {"languages": '["de", "zh", "sw"]'},
}
DEV_EVAL = {
    "eval.benchmarks": '["ntrex"]',
    "eval.limit": '{"ntrex": 150}',
    "eval.alignment.sets": '["ntrex"]',
    "eval.alignment.encodings": '["prompt"]',
    "eval.alignment.max_sentences": "250",
    "arms": '["control", "alignx"]',
    # the compacting decoder at 64 rows: about 2x the sentences per second of batch 16, same outputs
    # (README, "Generation"); points run before this line was added used 16 (their `dev` field says so)
    "eval.batch_size": "64",
}
# the final report runs the profile's own evaluation with the point's overrides and this one, pinned
# here so that an edit of the profile cannot change a reading already made: the compacting decoder at
# 64 rows, as on the development set (same outputs as 16, about 2x the sentences per second)
FINAL_EVAL = {"eval.batch_size": "64"}
# an evaluation set and the catalogue source that holds the same sentences
SAME_DATA = {"flores": "flores200", "ntrex": "ntrex128"}
SUMMARY = re.compile(r"^alignx − control, (\S+) (chrf_seg|x2en_top1|en2x_top1|off_target): "
                     r"([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]")


class ProtocolError(ValueError):
    """A sweep point that would score on the test set, or on data it trains on."""


def scored_sets(cfg: PipelineConfig) -> set[str]:
    """The data sets an evaluation under ``cfg`` reads: benchmarks and alignment sets."""
    return set(cfg.eval.benchmarks) | set(cfg.eval.alignment.sets)


def check_protocol(report_cfg: PipelineConfig, point_cfg: PipelineConfig) -> None:
    """Refuse a point that scores on a set the report uses, or on one its training reads."""
    problems = []
    test = scored_sets(report_cfg) & scored_sets(point_cfg)
    if test:
        problems.append(f"it scores on {sorted(test)}, which the report of profile {report_cfg.name!r} reads "
                        "(sweeps score on the development set only)")
    trained = {s for s in scored_sets(point_cfg) if SAME_DATA.get(s, s) in point_cfg.data.sources}
    if trained:
        problems.append(f"it scores on {sorted(trained)}, which its training reads (data.sources "
                        f"{point_cfg.data.sources})")
    if problems:
        raise ProtocolError("sweep point refused: " + "; ".join(problems))


def point_overrides(name: str, run_root: Path) -> dict[str, str]:
    return {**DEV_EVAL, **POINTS[name], "run_root": json.dumps(str(run_root))}


def point_config(profile: str, overrides: dict[str, str]) -> PipelineConfig:
    return load_profile(profile, {k: json.loads(v) for k, v in overrides.items()})


ATTEMPT = "=== sweep attempt"


def run_logged(cmd: list[str], log: Path) -> tuple[int, int, float]:
    """Run ``cmd`` with its output appended to ``log``: (exit status, attempt number, minutes).

    Appended: a point stopped and run again (it resumes from its checkpoints and finished evaluation
    tasks) keeps every attempt's log."""
    attempts = log.read_text(encoding="utf-8").count(ATTEMPT) if log.is_file() else 0
    start = time.monotonic()
    with log.open("a", encoding="utf-8") as out:
        out.write(f"{ATTEMPT} {attempts + 1}, {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(cmd)}\n")
        out.flush()
        rc = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}).returncode
    return rc, attempts + 1, round((time.monotonic() - start) / 60, 1)


def pipeline_command(profile: str, overrides: dict[str, str]) -> list[str]:
    # `-m` from REPO: this checkout's code (a frozen worktree keeps every point on the same code)
    cmd = [sys.executable, "-m", "flows.cli", "pipeline", "--profile", profile]
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={value}"]
    return cmd


def run_point(name: str, profile: str, run_root: Path, log_dir: Path) -> dict:
    overrides = point_overrides(name, run_root)
    check_protocol(load_profile(profile), point_config(profile, overrides))
    log = log_dir / f"{name}.log"
    rc, attempt, minutes = run_logged(pipeline_command(profile, overrides), log)
    # wall_min is this attempt's: an earlier, stopped attempt's work came from its checkpoints
    point = {"point": name, "overrides": POINTS[name], "dev": DEV_EVAL, "rc": rc, "attempt": attempt,
             "wall_min": minutes, "log": str(log)}
    report = re.findall(r"^report: (.+)$", log.read_text(encoding="utf-8"), flags=re.M)
    if rc == 0 and report:
        summary = json.loads((Path(report[-1]).parent / "summary.json").read_text(encoding="utf-8"))["summary"]
        for line in summary:
            if m := SUMMARY.search(line):
                point[f"{m[1]} {m[2]}"] = {"delta": float(m[3]), "ci": [float(m[4]), float(m[5])]}
        point["report"] = report[-1]
    return point


# The aim, read on the development set: X->en chrF++ gain >= 1.0 with an interval above zero,
# en->X not worse (interval lower bound >= -0.5), the retrieval gain kept (interval above zero).
COLUMNS = [("X->en chrF++", "ntrex_x-en chrf_seg", 1), ("en->X chrF++", "ntrex_en-x chrf_seg", 1),
           ("en->X off-target", "ntrex_en-x off_target", 100), ("X->en top-1 in the prompt", "align_ntrex_prompt x2en_top1", 100),
           ("en->X top-1 in the prompt", "align_ntrex_prompt en2x_top1", 100)]


def meets_aim(point: dict) -> bool:
    x2en, en2x = point.get("ntrex_x-en chrf_seg"), point.get("ntrex_en-x chrf_seg")
    kept = [point.get(k) for k in ("align_ntrex_prompt x2en_top1", "align_ntrex_prompt en2x_top1")]
    if not (x2en and en2x and all(kept)):
        return False
    return x2en["delta"] >= 1.0 and x2en["ci"][0] > 0 and en2x["ci"][0] >= -0.5 and all(k["ci"][0] > 0 for k in kept)


def read_points(results: Path) -> dict[str, dict]:
    """Every point in ``results.jsonl``, the latest line of a point run twice; a malformed line is named."""
    points: dict[str, dict] = {}
    for number, line in enumerate(results.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                point = json.loads(line)
                points[point["point"]] = point
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{results}: line {number} is not a sweep point ({exc})") from None
    return points


def results_table(points: dict[str, dict]) -> str:
    """Every point (from ``known_points``), AlignX − control with its 95% interval, as a markdown table;
    a point that failed shows its exit status."""

    def cell(point: dict, key: str, scale: float) -> str:
        value = point.get(key)
        if not value:
            return f"(exit {point.get('rc')})" if point.get("rc") else "–"
        lo, hi = (scale * v for v in value["ci"])
        return f"{scale * value['delta']:+.2f} [{lo:+.2f}, {hi:+.2f}]"

    head = ["point", *(name for name, _, _ in COLUMNS), "aim met", "wall min"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, point in points.items():
        wall = str(point.get("wall_min", "–"))
        if point.get("attempt", 1) > 1:
            wall += f" (the last of {point['attempt']} attempts)"
        cells = [name, *(cell(point, key, scale) for _, key, scale in COLUMNS), "yes" if meets_aim(point) else "no", wall]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


FINAL = "final.json"
# the committed record of the sweep: every point tried and every reading of the test, in the repository
RECORD_DIR = REPO / "docs" / "real-sweep"
POINTS_FILE = "points.jsonl"


def known_points(log_dir: Path, record_dir: Path | None = None) -> dict[str, dict]:
    """Every point tried: the committed record, then the run root's ``results.jsonl`` (a point in both: the
    run root's latest line)."""
    points: dict[str, dict] = {}
    for results in ((record_dir or RECORD_DIR) / POINTS_FILE, log_dir / "results.jsonl"):
        if results.is_file():
            points.update(read_points(results))
    return points


def record_point(point: dict, log_dir: Path, record_dir: Path | None = None) -> None:
    """Append ``point`` to the run root's ``results.jsonl`` and to the committed record."""
    for results in (log_dir / "results.jsonl", (record_dir or RECORD_DIR) / POINTS_FILE):
        results.parent.mkdir(parents=True, exist_ok=True)
        with results.open("a", encoding="utf-8") as f:
            f.write(json.dumps(point) + "\n")


def has_dev_figures(point: dict | None) -> bool:
    return bool(point) and point.get("rc") == 0 and any(key in point for _, key, _ in COLUMNS)


def final_choices(log_dir: Path, record_dir: Path | None = None) -> list[dict]:
    """Every reading of the test so far, from the run root's ``final.json`` and the committed one."""
    seen: dict[tuple, dict] = {}
    for record in (log_dir / FINAL, (record_dir or RECORD_DIR) / FINAL):
        if record.is_file():
            try:
                choices = json.loads(record.read_text(encoding="utf-8"))["choices"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{record}: not a record of final reports ({exc}); expected "
                                 '{"choices": [...]}') from None
            for choice in choices:
                seen[(choice["point"], choice["chosen_at"])] = choice
    return sorted(seen.values(), key=lambda c: c["chosen_at"])


# `--final auto`: the choice made by a rule fixed before the last points ran, not by hand
RULE = ("among the points that meet the aim on the development set, the highest X->en chrF++ gain; if none "
        "does, the highest mean of the X->en and en->X chrF++ gains (both directions weigh the same)")


def choose_final(points: dict[str, dict]) -> str:
    """The point ``RULE`` picks among ``points`` (those with both translation figures)."""
    scored = {name: p for name, p in points.items()
              if has_dev_figures(p) and "ntrex_x-en chrf_seg" in p and "ntrex_en-x chrf_seg" in p}
    if not scored:
        raise ProtocolError("final report refused: no point has development figures in both directions yet")
    met = [name for name, p in scored.items() if meets_aim(p)]
    if met:
        return max(met, key=lambda name: scored[name]["ntrex_x-en chrf_seg"]["delta"])
    return max(scored, key=lambda name: (scored[name]["ntrex_x-en chrf_seg"]["delta"]
                                         + scored[name]["ntrex_en-x chrf_seg"]["delta"]) / 2)


def run_final(name: str, profile: str, run_root: Path, log_dir: Path, reason: str | None) -> dict:
    """The report on the test set (FLORES, XCOPA; every arm of the profile) for the point ``name``, chosen
    on the development figures already in ``results.jsonl``.

    The test is read for one chosen point: ``final.json`` records the choice, with the point's development
    figures and every point known at that time, before anything runs. Running the same point again
    resumes it; a different point afterwards reads the test a second time, which ``reason`` must justify
    (it is recorded beside the first choice)."""
    points = known_points(log_dir)
    rule = None
    if name == "auto":
        name, rule = choose_final(points), RULE
    chosen = points.get(name)
    if not has_dev_figures(chosen):
        raise ProtocolError(f"final report refused: {name!r} has no development figures in "
                            f"{log_dir / 'results.jsonl'} or {RECORD_DIR / POINTS_FILE} (choose among points "
                            "already run with --points; the test is read only after them)")
    history = final_choices(log_dir)
    if history and history[-1]["point"] != name:
        if not reason:
            raise ProtocolError(f"final report refused: the test was already read for {history[-1]['point']!r} "
                                f"({RECORD_DIR / FINAL}); choosing {name!r} now would tune on the test. Pass "
                                "--read-test-again REASON to do it anyway, recorded beside the first choice")
    if not history or history[-1]["point"] != name:
        history.append({"point": name, "chosen_at": time.strftime("%Y-%m-%d %H:%M:%S"), "reason": reason, "rule": rule,
                        "dev": {k: v for k, v in chosen.items() if isinstance(v, dict) and "ci" in v},
                        "points_known": sorted(points), "aim_met_on_dev": meets_aim(chosen),
                        "eval": FINAL_EVAL})
    for record_file in (log_dir / FINAL, RECORD_DIR / FINAL):  # both, before anything runs
        record_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(record_file, {"choices": history})
    overrides = {**FINAL_EVAL, **POINTS[name], "run_root": json.dumps(str(run_root))}  # the profile's evaluation
    log = log_dir / f"final-{name}.log"
    rc, attempt, minutes = run_logged(pipeline_command(profile, overrides), log)
    report = re.findall(r"^report: (.+)$", log.read_text(encoding="utf-8"), flags=re.M)
    return {"final": name, "rc": rc, "attempt": attempt, "wall_min": minutes, "log": str(log),
            "report": report[-1] if rc == 0 and report else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", nargs="+", default=list(POINTS), choices=list(POINTS))
    parser.add_argument("--profile", default=PROFILE)
    parser.add_argument("--run-root", type=Path, default=REPO / "data" / "runs" / "real-sweep")
    parser.add_argument("--table", action="store_true", help="print every point run so far and stop")
    parser.add_argument("--final", metavar="POINT", choices=[*POINTS, "auto"],
                        help="the report on the test set for POINT, chosen on its development figures; "
                             f"auto: {RULE}")
    parser.add_argument("--read-test-again", metavar="REASON",
                        help="with --final: a second point after the test was read for another (recorded)")
    args = parser.parse_args()
    if args.final:
        log_dir = args.run_root / "sweep-logs"
        done = run_final(args.final, args.profile, args.run_root, log_dir, args.read_test_again)
        print(json.dumps(done), flush=True)
        return 0 if done["rc"] == 0 else 1
    if args.table:
        points = known_points(args.run_root / "sweep-logs")
        if not points:
            raise SystemExit(f"no sweep results in {args.run_root / 'sweep-logs' / 'results.jsonl'} or "
                             f"{RECORD_DIR / POINTS_FILE}: run some --points first")
        print(results_table(points))
        return 0
    for name in args.points:  # every point is checked before the first one runs
        check_protocol(load_profile(args.profile), point_config(args.profile, point_overrides(name, args.run_root)))
    log_dir = args.run_root / "sweep-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    for name in args.points:
        point = run_point(name, args.profile, args.run_root, log_dir)
        print(json.dumps(point), flush=True)
        record_point(point, log_dir)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ProtocolError as exc:  # a refused point or final: one line, nothing has run
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
