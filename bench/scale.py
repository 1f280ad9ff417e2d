"""Scale-out figures: stage-1 throughput at 1 and 2 processes, and the memory plan against measured peaks.

Prints ONE JSON object:

- ``throughput``: stage 1 of a small Llama (SentencePiece vocabulary trained here on Tatoeba) run
  through the launcher as 1 process (2 threads), 2 replicated processes (DDP, 1 thread each) and 2
  sharded processes (FSDP2), at the same global batch; tokens/s from the training log (real tokens,
  padding excluded; the first step, a warm-up, left out);
- ``plan``: ``alignx.memory_plan.estimate`` against the peak resident memory of real training steps measured
  in a fresh process (``bench/memory_probe.py``) for two models;
- ``gpu`` (on a CUDA machine; ``--gpu-dry-run`` runs the same code at toy size on the CPU): a
  random-initialised ~1.2B Llama (Llama 3.2 1B's shape, the real Llama 3 vocabulary from the mirror)
  through stage 1 under FSDP2 in bf16, one process per GPU: tokens/s, model-FLOPs utilisation
  (6 x parameters + attention, over ``--peak-tflops`` per GPU) and the peak memory against the plan.

    .venv/bin/python bench/scale.py                    # d256, 4 layers, 6 steps of 16 x 128 tokens
    .venv/bin/python bench/scale.py --steps 10 --hidden 384
    .venv/bin/python bench/scale.py --skip-cpu         # on a GPU machine: the GPU part only
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

from alignx.config import REPO_ROOT, ModelSpec, TokenizerSpec, TrainConfig  # noqa: E402
from alignx.profiles import parse_config  # noqa: E402
from bench.memory_probe import BATCH, MODELS, SEQ, probe_command  # noqa: E402
from tests.train.tatoeba_shards import tatoeba_pairs, write_shards  # noqa: E402  (tiny Tatoeba shards, no data stage)

LANGS = ("de", "fr", "ru", "zh")


def build_inputs(work: Path, args) -> tuple[Path, Path]:
    """Shards of Tatoeba pairs, and a random Llama with a SentencePiece tokenizer trained on them."""
    from alignx.model.bootstrap import build_llama, template_sentences, train_tokenizer

    mirror = REPO_ROOT.parent / "shared" / "data"
    pairs = {lang: tatoeba_pairs(mirror, lang, args.pairs) for lang in LANGS}
    write_shards(work / "shards", pairs)
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
    from alignx.training_records import read_log

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

    from alignx.memory_plan import estimate, shape_from_config

    command, env = probe_command(str(REPO))
    measured = json.loads(subprocess.run(command, capture_output=True, text=True, env=env, check=True)
                          .stdout.splitlines()[-1])
    train = TrainConfig(micro_batch_size=BATCH, max_length=SEQ, mixed_precision="no")
    rows = []
    for (name, spec), got in zip(MODELS.items(), measured):
        shape = shape_from_config(AutoConfig.for_model(spec["model_type"], **spec["config"]), name)
        est = estimate(shape, train, "ddp", 1, "cpu")
        rows.append({"model": name, "params": shape.params, "estimated_mib": round(est.total / 2**20, 1),
                     "measured_peak_mib": round(got["peak"] / 2**20, 1),
                     "ratio": round(est.total / got["peak"], 3)})
    return rows


def gpu_run(model_dir: Path, shards: Path, work: Path, args) -> dict:
    """Stage 1 of a ~1.2B Llama (Llama 3 vocabulary) under FSDP2 on every visible GPU (see the module doc)."""
    import gzip
    import shutil

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from alignx.launch import launch
    from alignx.memory_plan import estimate, shape_from_config
    from alignx.training_records import read_log

    folder = work / "llama3-tokenizer"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        with gzip.open(REPO_ROOT.parent / "shared" / "data" / "tokenizers" / "llama3" / f"{name}.gz") as src, \
                (folder / name).open("wb") as dst:
            shutil.copyfileobj(src, dst)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.pad_token = next(t for t in ("<|finetune_right_pad_id|>", "<|reserved_special_token_0|>")
                               if t in tokenizer.get_vocab())  # a reserved token, never in text
    dims = (dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128) if args.gpu_dry_run else
            dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                 intermediate_size=8192))
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=4096, tie_word_embeddings=True,
                         rope_theta=500000.0, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **dims)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 1
    train = TrainConfig(steps=args.gpu_steps, micro_batch_size=args.gpu_micro, global_batch_size=args.gpu_micro * gpus,
                        lr=1e-5, max_length=256, checkpoint_every=10**6, log_every=1, group_by_length=False,
                        sharding="fsdp", mixed_precision="no" if args.gpu_dry_run else "bf16")
    layers = config.num_hidden_layers
    cfg = parse_config({"name": "scale-gpu", "languages": list(LANGS), "run_root": str(work / "gpu-runs"),
                        "stage1": {"align_layer": layers // 2, "lam_width": 128, "train": train.model_dump()}})
    out = work / "gpu-runs" / "stage1"
    started = time.perf_counter()
    launch("stage1", {"model": str(model_dir), "shards": str(shards), "out": str(out), "control": False}, cfg, gpus,
           on_line=lambda line: print(line, file=sys.stderr))
    rows = read_log(out / "train_log.jsonl")[2:]  # two warm-up steps left out
    seconds, tokens = sum(r["step_s"] for r in rows), sum(r["tokens"] for r in rows)
    shape = shape_from_config(config, "llama-1b-llama3-vocab")
    mean_len = tokens / (len(rows) * train.global_batch_size)
    flops_per_token = 6 * shape.params + 12 * layers * config.hidden_size * mean_len
    tokens_per_s = tokens / seconds
    planned = estimate(shape, train, "fsdp", gpus, "cuda", stage1_head_width=128).total / 2**30
    peaks = [r["max_memory_gib"] for r in rows if "max_memory_gib" in r]  # recorded on CUDA only
    peak = max(peaks) if peaks else None
    return {"params": shape.params, "gpus": gpus, "micro_batch": train.micro_batch_size, "mean_tokens_per_example":
            round(mean_len, 1), "steps_timed": len(rows), "tokens_per_s": round(tokens_per_s, 1),
            "mfu": round(tokens_per_s * flops_per_token / (gpus * args.peak_tflops * 1e12), 4),
            "peak_memory_gib_rank0": peak, "plan_gib": round(planned, 2),
            "wall_s": round(time.perf_counter() - started, 1), "device": torch.cuda.get_device_name(0)
            if torch.cuda.is_available() else "cpu (dry run)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--micro", type=int, default=8, help="micro-batch (global batch = 2 micro-batches)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--pairs", type=int, default=400, help="Tatoeba pairs per language")
    parser.add_argument("--skip-cpu", action="store_true", help="only the GPU part")
    parser.add_argument("--gpu-dry-run", action="store_true", help="the GPU part at toy size on the CPU")
    parser.add_argument("--gpu-steps", type=int, default=12)
    parser.add_argument("--gpu-micro", type=int, default=64, help="micro-batch per GPU")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak per GPU (H100/H200 SXM)")
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory(prefix="alignx-scale-") as tmp:
        work = Path(tmp)
        model, shards = build_inputs(work, args)
        result: dict = {"cpu_cores": os.cpu_count()}
        if not args.skip_cpu:
            result.update({"model": {"hidden": args.hidden, "layers": args.layers, "vocab": args.vocab},
                           "batch": {"global": args.micro * 2, "max_length": args.seq, "steps": args.steps},
                           "throughput": throughput(model, shards, work, args), "plan": plan_vs_measured()})
        result["gpu"] = (gpu_run(work / "llama-1b", shards, work, args)
                         if torch.cuda.is_available() or args.gpu_dry_run else None)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
