"""Data-stage throughput: read -> language ID -> filters -> Parquet shards, against fastText alone.

Builds N sentence pairs from the public Tatoeba data (the nine English-centred pairs in equal parts,
repeated with a counter appended so dedup keeps them), runs collect + filter + shard, and in the same
process times fastText's predict alone on both sides of the same pairs. Peak memory is measured for
N, 2N and 4N pairs, each in its own subprocess (ru_maxrss never falls inside a process).

    .venv/bin/python bench/data_throughput.py --pairs 200000

Prints one JSON line: pairs_per_s, raw_lid_pairs_per_s, ratio (= pairs_per_s / raw_lid_pairs_per_s)
and peak RSS per size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from alignx.data import data_stages  # noqa: E402
from alignx.data.langid import load_model, prepare_model  # noqa: E402
from alignx.data.source_catalogue import open_source  # noqa: E402
from alignx.languages import get_language  # noqa: E402
from alignx.mirror import resolve_mirror  # noqa: E402
from alignx.profiles import parse_config  # noqa: E402

LANGS = ["bn", "de", "es", "fr", "ja", "ru", "sw", "th", "zh"]


def build_mirror(n_pairs: int, root: Path) -> None:
    """A Tatoeba-layout mirror with ``n_pairs`` pairs split evenly over the nine languages."""
    reader = open_source("tatoeba", resolve_mirror(None))
    for i, x in enumerate(LANGS):
        want = n_pairs // len(LANGS) + (1 if i < n_pairs % len(LANGS) else 0)
        base = [p for batch in reader.read("en", x) for p in batch]
        iso3 = get_language(x).iso3
        pair3 = "-".join(sorted(["eng", iso3]))
        folder = root / "tatoeba" / pair3
        folder.mkdir(parents=True)
        with (folder / f"tatoeba.{pair3}.eng").open("w", encoding="utf-8") as fa, \
                (folder / f"tatoeba.{pair3}.{iso3}").open("w", encoding="utf-8") as fb:
            for k in range(want):
                en, xx = base[k % len(base)]
                rnd = k // len(base)  # repeats get a counter, so dedup keeps them
                fa.write(f"{en}\n" if rnd == 0 else f"{en} {rnd}\n")
                fb.write(f"{xx}\n" if rnd == 0 else f"{xx} {rnd}\n")


def raw_lid_seconds(cfg) -> float:
    """fastText predict alone on both sides of the same pairs (k as the policies ask), in this process."""
    reader = open_source("tatoeba", Path(cfg.data_mirror))
    pairs = [(a, b, x) for x in LANGS for batch in reader.read("en", x) for a, b in batch]
    predict = load_model(prepare_model(cfg.data.langid)).f.predict
    k_en = cfg.data.langid.policy("en").top_k
    k_x = {x: cfg.data.langid.policy(x).top_k for x in LANGS}
    start = time.perf_counter()
    for en, xx, x in pairs:
        predict(en + "\n", k_en, 0.0, "strict")
        predict(xx + "\n", k_x[x], 0.0, "strict")
    return time.perf_counter() - start


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(mirror: Path, n_pairs: int, workers: int, with_raw: bool) -> dict:
    """Run collect -> filter -> shard on the bench mirror (in this process); peak RSS before raw LID."""
    with tempfile.TemporaryDirectory(prefix="alignx-bench-run-") as tmp:
        cfg = parse_config({"name": "bench", "run_root": tmp, "data_mirror": str(mirror),
                            "languages": LANGS, "data": {"sources": ["tatoeba"], "workers": workers}})
        run_root = Path(tmp)
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        raw = data_stages.collect_source("tatoeba", cfg, run_root)
        t1 = time.perf_counter()
        filtered = data_stages.filter_pairs([raw], cfg, run_root)
        t2 = time.perf_counter()
        shards = data_stages.write_shards(filtered, cfg, run_root)
        t3 = time.perf_counter()
        out = {
            "pairs": n_pairs,
            "kept": sum(shards.meta["rows"].values()),
            "seconds": {"collect": round(t1 - t0, 2), "filter": round(t2 - t1, 2), "shard": round(t3 - t2, 2)},
            "pairs_per_s": round(n_pairs / (t3 - t0)),
            "cpu_s": round(_cpu_seconds() - cpu0, 2),  # this process and its workers: shows contention
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "worker_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        }
        if with_raw:
            out["raw_lid_pairs_per_s"] = round(n_pairs / raw_lid_seconds(cfg))
        return out


def in_subprocess(n_pairs: int, workers: int, with_raw: bool) -> dict:
    """Build a mirror of ``n_pairs`` here, measure in a fresh process (its own ru_maxrss)."""
    with tempfile.TemporaryDirectory(prefix="alignx-bench-mirror-") as tmp:
        build_mirror(n_pairs, Path(tmp))
        cmd = [sys.executable, __file__, "--pairs", str(n_pairs), "--workers", str(workers), "--mirror", tmp]
        if with_raw:
            cmd.append("--raw")
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=2, help="filter processes (data.workers)")
    parser.add_argument("--scales", default="1,2,4", help="multiples of --pairs measured for peak memory")
    parser.add_argument("--mirror", type=Path, help=argparse.SUPPRESS)  # internal: measure one size here
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mirror:
        print(json.dumps(measure(args.mirror, args.pairs, args.workers, args.raw)))
        return
    load_before = os.getloadavg()[0]  # other work on the machine slows the 2-process pipeline first
    main_run = in_subprocess(args.pairs, args.workers, with_raw=True)
    memory = {}
    for scale in (int(s) for s in args.scales.split(",")):
        run = main_run if scale == 1 else in_subprocess(args.pairs * scale, args.workers, with_raw=False)
        memory[str(args.pairs * scale)] = {"peak_rss_mb": run["peak_rss_mb"],
                                           "worker_peak_rss_mb": run["worker_peak_rss_mb"],
                                           "pairs_per_s": run["pairs_per_s"]}
    print(json.dumps({
        "pairs": args.pairs,
        "workers": args.workers,
        "pairs_per_s": main_run["pairs_per_s"],
        "raw_lid_pairs_per_s": main_run["raw_lid_pairs_per_s"],
        "ratio": round(main_run["pairs_per_s"] / main_run["raw_lid_pairs_per_s"], 3),
        "kept": main_run["kept"],
        "seconds": main_run["seconds"],
        "cpu_s": main_run["cpu_s"],
        "load_avg_1min_before": round(load_before, 2),
        "memory_by_pairs": memory,
    }))


if __name__ == "__main__":
    main()
