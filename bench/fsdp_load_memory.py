"""Host memory of a sharded (FSDP2) model load: every process reads the checkpoint, against the main
process reading it and the others receiving their shards (``alignx.train.parallel_strategies.load_from_main``).

Builds a Llama of about 130M parameters (saved once to a temporary folder in bf16, as released
checkpoints are; training loads it in float32, so every load makes a new float32 copy), then for each
path starts ``torchrun --nproc-per-node N`` (gloo, CPU; N = --processes, default 4): each process loads the model as that path
does, shards it with the stage's ``Sharded`` strategy (or, for the old path, ``fully_shard`` alone, as
the code did before) and reports its peak resident memory (VmHWM). Prints one JSON line per path and
one with the ratio: the group's summed peak over the processes' own baseline (Python, torch, the
model code), in GiB and in model copies. On GPUs the shards live on the devices, so the host keeps
one copy (the main process's) instead of one per process.

    OMP_NUM_THREADS=1 .venv/bin/python bench/fsdp_load_memory.py [--layers 12] [--processes 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def worker(model_dir: str, path: str, results: str) -> None:
    import torch
    from accelerate import Accelerator
    from torch.distributed.fsdp import fully_shard

    from alignx.config import TrainConfig
    from alignx.distributed_run import process_state
    from alignx.model.alignx_model import CausalLMObjective
    from alignx.train.parallel_strategies import Sharded, decoder_layers
    from alignx.train.training_stages import load_lm

    state = process_state()
    state.wait_for_everyone()
    baseline = rss()["VmRSS"]
    if path == "every-process":  # the code before: each process reads the whole float32 checkpoint
        from transformers import AutoModelForCausalLM

        objective = CausalLMObjective(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32))
        for layer in decoder_layers(objective.lm):
            fully_shard(layer)
        fully_shard(objective)
    else:
        lm = load_lm(model_dir, TrainConfig(sharding="fsdp", mixed_precision="no"))
        objective = CausalLMObjective(lm)
        Sharded(Accelerator(cpu=True), "no").setup(objective, lambda params: (None, None))
    state.wait_for_everyone()
    shard = sum(p.to_local().numel() * 4 for p in objective.parameters())
    record = {"rank": state.process_index, "baseline": baseline, "peak": rss()["VmHWM"], "shard_bytes": shard}
    Path(results, f"{path}-rank{state.process_index}.json").write_text(json.dumps(record))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        config = LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=args.layers,
                             num_attention_heads=12, num_key_value_heads=12, tie_word_embeddings=False)
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        params = sum(p.numel() for p in model.parameters())
        model_bytes = params * 4
        model.to(torch.bfloat16).save_pretrained(Path(tmp, "model"))  # as released checkpoints are
        del model
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
               "PYTHONPATH": str(REPO)}
        rows = {}
        for path in ("every-process", "main-process"):
            subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.processes),
                            __file__, "--worker", str(Path(tmp, "model")), path, tmp], check=True, env=env,
                           cwd=REPO, stdout=subprocess.DEVNULL)
            ranks = [json.loads(Path(tmp, f"{path}-rank{r}.json").read_text()) for r in range(args.processes)]
            over = sum(r["peak"] - r["baseline"] for r in ranks)
            rows[path] = over
            print(json.dumps({"path": path, "processes": args.processes, "params_m": round(params / 1e6, 1), "model_gib": round(model_bytes / 2**30, 3),
                              "group_peak_over_baseline_gib": round(over / 2**30, 3),
                              "model_copies": round(over / model_bytes, 2),
                              "per_rank_gib": [round((r["peak"] - r["baseline"]) / 2**30, 3) for r in ranks]}),
                  flush=True)
        print(json.dumps({"ratio_every_over_main": round(rows["every-process"] / rows["main-process"], 2)}))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:5])
        sys.exit(0)
    sys.exit(main())
