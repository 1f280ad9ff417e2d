"""The memory plan's FSDP rows against real sharded CPU training steps: two gloo processes, with and
without gradient accumulation.

One ``torchrun --nproc-per-node 2`` of this file's worker, which warms up on a one-layer model, then for
accumulation 1 and then 2 shards the 25M-parameter Llama of ``bench/memory_probe.py`` with ``fully_shard``
per decoder layer and then the whole model (as ``Sharded`` does), resets the peak and takes a short step
and a full one of 4 x 128 tokens per micro-batch (``set_requires_gradient_sync`` only on the last
micro-batch, as the loop); each process reports, per setting, its peak resident memory over its baseline
(large blocks are mmapped, so what one setting frees goes back to the system before the next). Prints one
JSON line per setting: measured peaks, the plan's ``estimate(..., "fsdp", 2, "cpu")`` and their ratio.

    .venv/bin/python bench/fsdp_memory_probe.py
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ACCUMULATIONS = (1, 2)


def worker(out: str) -> None:
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoConfig, AutoModelForCausalLM

    from alignx.distributed_run import process_state
    from alignx.model.losses import lm_loss
    from bench.memory_probe import BATCH, MODELS, PAD, SEQ, batch, memory

    torch.set_num_threads(1)
    state = process_state()
    spec = MODELS["llama"]

    def run(cfg, size: int, seq: int, pad: int, accum: int) -> None:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg)
        mesh = init_device_mesh("cpu", (state.num_processes,))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for seq_len, pad_len in ((8, 1), (seq, pad)):
            for micro in range(accum):
                model.set_requires_gradient_sync(micro == accum - 1)
                b = batch(cfg.vocab_size, size, seq_len, pad_len)
                logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                               position_ids=b["position_ids"], use_cache=False).logits
                lm_loss(logits, b["labels"]).backward()
                del logits
            optimizer.step()
            optimizer.zero_grad(set_to_none=False)

    warm = AutoConfig.for_model(spec["model_type"], **{**spec["config"], "num_hidden_layers": 1, "vocab_size": 512})
    run(warm, 2, 16, 2, 1)
    for accum in ACCUMULATIONS:
        gc.collect()
        base = memory()
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        run(AutoConfig.for_model(spec["model_type"], **spec["config"]), BATCH, SEQ, PAD, accum)
        peak = memory()["VmHWM"] - base["VmRSS"]
        Path(out, f"acc{accum}-rank{state.process_index}.json").write_text(json.dumps({"peak": peak}))


def main() -> int:
    from transformers import AutoConfig

    from alignx.config import TrainConfig
    from alignx.memory_plan import estimate, shape_from_config
    from bench.memory_probe import BATCH, MODELS, SEQ

    spec = MODELS["llama"]
    shape = shape_from_config(AutoConfig.for_model(spec["model_type"], **spec["config"]), "llama")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        __file__, "--worker", tmp], check=True, env=env, cwd=REPO,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for accum in ACCUMULATIONS:
            peaks = [json.loads(Path(tmp, f"acc{accum}-rank{r}.json").read_text())["peak"] for r in (0, 1)]
            est = estimate(shape, TrainConfig(micro_batch_size=BATCH, max_length=SEQ, mixed_precision="no",
                                              grad_accum=accum), "fsdp", 2, "cpu")
            print(json.dumps({"model": "llama", "params": shape.params, "processes": 2, "accumulation": accum,
                              "measured_mib": [round(p / 2**20, 1) for p in peaks],
                              "plan_mib": round(est.total / 2**20, 1),
                              "measured_over_plan": round(max(peaks) / est.total, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
        sys.exit(0)
    sys.exit(main())
