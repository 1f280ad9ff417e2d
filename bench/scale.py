"""Scale-out figures: stage-1 throughput at 1 and 2 processes, and the memory plan against measured peaks.

Prints ONE JSON object:

- ``throughput``: stage 1 of a small Llama (SentencePiece vocabulary trained here on Tatoeba) run
  through the launcher as 1 process (2 threads), 2 replicated processes (DDP, 1 thread each) and 2
  sharded processes (FSDP2), at the same global batch; tokens/s from the training log (real tokens,
  padding excluded; the first step, a warm-up, left out);
- ``plan``: ``alignx.plan.estimate`` against the peak resident memory of real training steps measured
  in a fresh process (``bench/memory_probe.py``) for two models;
- ``gpu``: not run without a CUDA device.

    .venv/bin/python bench/scale.py                    # d256, 4 layers, 6 steps of 16 x 128 tokens
    .venv/bin/python bench/scale.py --steps 10 --hidden 384
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from alignx.config import REPO_ROOT, ModelSpec, TokenizerSpec, TrainConfig, parse_config  # noqa: E402

LANGS = ("de", "fr", "ru", "zh")


def tatoeba(mirror: Path, lang: str, limit: int) -> list[tuple[str, str]]:
    from alignx.languages import get_language

    x3 = get_language(lang).iso3
    folder = next(p for p in (mirror / "tatoeba").iterdir() if set(p.name.split("-")) == {x3, "eng"})
    lines = {code: (folder / f"tatoeba.{folder.name}.{code}").read_text(encoding="utf-8").splitlines()[:limit]
             for code in (x3, "eng")}
    return [(x.strip(), e.strip()) for x, e in zip(lines[x3], lines["eng"])]


def build_inputs(work: Path, args) -> tuple[Path, Path]:
    """Shards of Tatoeba pairs, and a random Llama with a SentencePiece tokenizer trained on them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from alignx.data.schema import PAIR_SCHEMA, pair_id
    from alignx.model.bootstrap import build_llama, template_sentences, train_tokenizer

    mirror = REPO_ROOT.parent / "shared" / "data"
    pairs = {lang: tatoeba(mirror, lang, args.pairs) for lang in LANGS}
    for lang, rows in pairs.items():
        table = pa.Table.from_pylist([
            {"pair_id": pair_id(lang, "en", x, e), "src_lang": lang, "tgt_lang": "en", "src_text": x, "tgt_text": e,
             "source": "tatoeba", "src_lid": 1.0, "tgt_lid": 1.0} for x, e in rows], schema=PAIR_SCHEMA)
        (work / "shards" / "train" / f"{lang}-en").mkdir(parents=True)
        pq.write_table(table, work / "shards" / "train" / f"{lang}-en" / "part-00000.parquet")
    sentences = [s for rows in pairs.values() for pair in rows for s in pair]
    tokenizer = train_tokenizer(sentences + template_sentences(["en", *LANGS], 50),
                                TokenizerSpec(vocab_size=args.vocab), work / "tokenizer")
    spec = ModelSpec(hidden_size=args.hidden, num_layers=args.layers, num_heads=4,
                     intermediate_size=args.hidden * 8 // 3, max_position_embeddings=512)
    model = build_llama(spec, tokenizer)
    model.save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    return work / "model", work / "shards"


def throughput(model: Path, shards: Path, work: Path, args) -> list[dict]:
    from alignx.launch import launch
    from alignx.records import read_log

    runs = []
    for name, processes, sharding, threads in (("1 process", 1, "none", 2), ("2 processes, DDP", 2, "none", 1),
                                               ("2 processes, FSDP2", 2, "fsdp", 1)):
        # the same micro-batches everywhere: one process accumulates two, two processes take one each
        train = TrainConfig(steps=args.steps, micro_batch_size=args.micro,
                            global_batch_size=args.micro * 2, lr=1e-4, max_length=args.seq, checkpoint_every=10**6,
                            log_every=1, sharding=sharding, mixed_precision="no", group_by_length=False)
        cfg = parse_config({"name": "scale", "languages": list(LANGS), "run_root": str(work / "runs"),
                            "stage1": {"align_layer": max(1, args.layers // 2), "train": train.model_dump()}})
        out = work / "runs" / name.replace(" ", "-").replace(",", "")
        os.environ["OMP_NUM_THREADS"] = str(threads)
        started = time.perf_counter()
        launch("stage1", {"model": str(model), "shards": str(shards), "out": str(out), "control": False}, cfg,
               processes)
        wall = time.perf_counter() - started
        rows = read_log(out / "train_log.jsonl")[1:]  # the first step warms up (allocations, first collectives)
        seconds, tokens = sum(r["step_s"] for r in rows), sum(r["tokens"] for r in rows)
        runs.append({"run": name, "processes": processes, "threads_per_process": threads,
                     "micro_batch": train.micro_batch_size, "global_batch": train.global_batch_size,
                     "accumulation": train.global_batch_size // (train.micro_batch_size * processes),
                     "steps_timed": len(rows), "tokens_per_s": round(tokens / seconds, 1), "wall_s": round(wall, 1),
                     "final_loss": round(rows[-1]["loss"], 4)})
    base = runs[0]["tokens_per_s"]
    for run in runs:
        run["speedup_vs_1_process"] = round(run["tokens_per_s"] / base, 3)
    return runs


def plan_vs_measured() -> list[dict]:
    from transformers import AutoConfig

    from alignx.plan import estimate, shape_from_config

    models = {
        "llama-25M": {"model_type": "llama", "config": {
            "vocab_size": 16000, "hidden_size": 512, "num_hidden_layers": 3, "num_attention_heads": 8,
            "num_key_value_heads": 4, "intermediate_size": 1376, "tie_word_embeddings": False}},
        "qwen3-20M": {"model_type": "qwen3", "config": {
            "vocab_size": 16000, "hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8,
            "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 1536, "tie_word_embeddings": True}},
    }
    batch, seq, pad = 4, 128, 5
    specs = [{**spec, "batch": batch, "seq": seq, "pad": pad} for spec in models.values()]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "memory_probe.py"), json.dumps(specs)],
                          capture_output=True, text=True, env=env, check=True)
    measured = json.loads(proc.stdout.splitlines()[-1])
    train = TrainConfig(micro_batch_size=batch, max_length=seq, mixed_precision="no")
    rows = []
    for (name, spec), got in zip(models.items(), measured):
        shape = shape_from_config(AutoConfig.for_model(spec["model_type"], **spec["config"]), name)
        est = estimate(shape, train, "ddp", 1, "cpu")
        rows.append({"model": name, "params": shape.params, "estimated_mib": round(est.total / 2**20, 1),
                     "measured_peak_mib": round(got["peak"] / 2**20, 1),
                     "ratio": round(est.total / got["peak"], 3)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--micro", type=int, default=8, help="micro-batch (global batch = 2 micro-batches)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--pairs", type=int, default=400, help="Tatoeba pairs per language")
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory(prefix="alignx-scale-") as tmp:
        work = Path(tmp)
        model, shards = build_inputs(work, args)
        result = {"model": {"hidden": args.hidden, "layers": args.layers, "vocab": args.vocab},
                  "batch": {"global": args.micro * 2, "max_length": args.seq, "steps": args.steps},
                  "throughput": throughput(model, shards, work, args), "plan": plan_vs_measured(),
                  "gpu": None if not torch.cuda.is_available() else "not implemented in this script",
                  "cpu_cores": os.cpu_count()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
