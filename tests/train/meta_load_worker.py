"""Run under ``torchrun --nproc_per_node 2``: a sharded model filled from the main process's copy.

Arguments: model dir, results dir. The main process loads the checkpoint; the other builds it on the
meta device through the stage's own loader (``training_stages._load``). After ``Sharded.setup`` each
process writes what it holds: how many weight bytes it had before the setup, the full state dict and
buffers gathered back, and the loss of one batch through the sharded model, against the plain
checkpoint's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from transformers import AutoModelForCausalLM

from alignx.config import TrainConfig
from alignx.distributed_run import process_state
from alignx.model.alignx_model import CausalLMObjective
from alignx.train.parallel_strategies import Sharded
from alignx.train.training_stages import _load


def main() -> None:
    model_dir, results = sys.argv[1], Path(sys.argv[2])
    state = process_state()
    _, lm = _load(model_dir, TrainConfig(sharding="fsdp", mixed_precision="no"))
    loaded_bytes = sum(p.numel() * p.element_size() for p in lm.parameters() if not p.is_meta)
    objective = CausalLMObjective(lm)
    strategy = Sharded(Accelerator(cpu=True), "no")
    strategy.setup(objective, lambda params: (torch.optim.AdamW(params), None))

    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    full = get_model_state_dict(objective, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    ids = torch.arange(3, 27).reshape(2, 12) % reference.config.vocab_size
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    with torch.no_grad():  # through the objective: its forward gathers the root's shards (embeddings, head)
        loss = float(objective(batch).loss)
        expected = float(CausalLMObjective(reference)(batch).loss)
    ref_state = reference.state_dict()
    ref_buffers = dict(reference.named_buffers())
    record = {
        "rank": state.process_index,
        "loaded_bytes": loaded_bytes,
        "model_bytes": sum(p.numel() * p.element_size() for p in reference.parameters()),
        "loss_diff": abs(loss - expected),
        "buffers_diff": max(float((b.cpu() - ref_buffers[n.removeprefix("lm.")]).abs().max())
                            for n, b in objective.named_buffers()),
    }
    if state.is_main_process:
        record["weights_diff"] = max(float((full["lm." + k] - v).abs().max()) for k, v in ref_state.items())
        record["tied"] = bool(torch.equal(full["lm.lm_head.weight"], full["lm.model.embed_tokens.weight"]))
    (results / f"rank{state.process_index}.json").write_text(json.dumps(record), encoding="utf-8")


if __name__ == "__main__":
    main()
