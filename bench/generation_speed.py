"""Greedy generation speed on FLORES translation: transformers' ``generate`` vs the compacting decoder.

Loads a real model (default: the catalogue's SmolLM2-135M-Instruct, converted once into --models-root),
builds the FLORES en->X and X->en prompts exactly as the translation evaluation does, and generates every
direction with both engines of ``GreedyGenerator`` (same prompts, batch size, stop string and limit).
Prints one JSON line with sentences/s of each (by wall clock and by this process's CPU time, which a busy
machine disturbs less), the speed-ups, and whether the outputs are identical (exit status 1 if not).
``--compact-batch-sizes`` also runs the compacting decoder at other batch sizes against the same
``generate`` baseline: it keeps its batch full, so a larger batch buys throughput that ``generate``, which
waits for a batch's longest row, would spend on finished rows.

    OMP_NUM_THREADS=2 .venv/bin/python bench/generation_speed.py [--sentences 32] [--langs de zh] [--model DIR]
    OMP_NUM_THREADS=2 .venv/bin/python bench/generation_speed.py --sentences 96 --langs de --compact-batch-sizes 16 64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alignx.eval.benchmarks import get_benchmark  # noqa: E402
from alignx.eval.generation import GreedyGenerator  # noqa: E402
from alignx.eval.runner import load_model  # noqa: E402
from alignx.eval.sources import read_documents  # noqa: E402
from alignx.eval.translation import translation_prompts  # noqa: E402
from alignx.mirror import resolve_mirror  # noqa: E402
from alignx.model.base_models import prepare_base_model  # noqa: E402

DEFAULT_MODEL = "SmolLM2-135M-Instruct"


def direction_prompts(tokenizer, langs: list[str], n: int, max_length: int) -> dict[str, list[list[int]]]:
    """The translation prompts of en->X and X->en for each language, from the mirror's FLORES files."""
    spec = get_benchmark("flores")
    mirror = resolve_mirror()
    text = {lang: [d["text"] for d in read_documents(spec, lang, mirror, limit=n)] for lang in [spec.pivot, *langs]}
    prompts = {}
    for lang in langs:
        for src, tgt in ((spec.pivot, lang), (lang, spec.pivot)):
            prompts[f"{src}-{tgt}"] = translation_prompts(tokenizer, src, tgt, text[src], max_length)
    return prompts


def timed(generator: GreedyGenerator, prompts: list[list[int]], until: list[str]) -> tuple[list[str], float, float]:
    """Outputs, wall-clock seconds and this process's CPU seconds (steadier on a shared machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    outputs = generator.generate(prompts, until)
    return outputs, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a Hugging Face model directory or catalogue name")
    parser.add_argument("--models-root", default="data/cache/models", help="where a catalogue model is converted")
    parser.add_argument("--sentences", type=int, default=32, help="FLORES sentences per direction")
    parser.add_argument("--langs", nargs="+", default=["de", "zh"])
    parser.add_argument("--batch-size", type=int, default=16, help="both engines' batch size")
    parser.add_argument("--compact-batch-sizes", type=int, nargs="+", default=None,
                        help="the compacting decoder at these batch sizes instead (generate keeps --batch-size)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = prepare_base_model(args.model, Path(args.models_root)).path
    model, tokenizer = load_model(model_dir)
    until = list(get_benchmark("flores").until or ["\n"])
    compact_sizes = args.compact_batch_sizes or [args.batch_size]
    engines = {"hf": GreedyGenerator(model, tokenizer, args.batch_size, args.max_new_tokens, engine="hf")}
    for size in compact_sizes:
        engines[f"compact@{size}"] = GreedyGenerator(model, tokenizer, size, args.max_new_tokens, engine="compact")
    prompts = direction_prompts(tokenizer, args.langs, args.sentences, engines["hf"].max_length)
    for generator in engines.values():  # warm-up
        generator.generate(next(iter(prompts.values()))[:2], until)
    outputs: dict[str, dict[str, list[str]]] = {name: {} for name in engines}
    wall = dict.fromkeys(engines, 0.0)
    cpu = dict.fromkeys(engines, 0.0)
    for k, direction in enumerate(prompts):
        # alternate the engines' order, so a change in the machine's load falls on all of them
        for name in (list(engines) if k % 2 == 0 else list(engines)[::-1]):
            outputs[name][direction], seconds, cpu_seconds = timed(engines[name], prompts[direction], until)
            wall[name] += seconds
            cpu[name] += cpu_seconds
    n = sum(len(p) for p in prompts.values())
    record = {
        "model": Path(model_dir).name, "directions": list(prompts), "sentences": n, "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens, "threads": torch.get_num_threads(),
        "hf_sentences_per_s": round(n / wall["hf"], 3), "hf_sentences_per_cpu_s": round(n / cpu["hf"], 3),
    }
    differing_any = False
    for size in compact_sizes:
        name = f"compact@{size}"
        differing = [(d, i) for d in prompts for i, (a, b) in enumerate(zip(outputs["hf"][d], outputs[name][d])) if a != b]
        differing_any |= bool(differing)
        suffix = "" if len(compact_sizes) == 1 and size == args.batch_size else f"_batch{size}"
        record.update({
            f"compact{suffix}_sentences_per_s": round(n / wall[name], 3),
            f"speedup{suffix}": round(wall["hf"] / wall[name], 2),
            f"compact{suffix}_sentences_per_cpu_s": round(n / cpu[name], 3),
            f"speedup_cpu_time{suffix}": round(cpu["hf"] / cpu[name], 2),
            f"identical{suffix}": not differing, f"differing{suffix}": differing[:10],
        })
    record["load_average_1min"] = round(os.getloadavg()[0], 2)  # other processes on the machine skew wall-clock times
    print(json.dumps(record))
    sys.exit(1 if differing_any else 0)


if __name__ == "__main__":
    main()
