"""Under FSDP the main process alone reads the weights: the others build the model on the meta device
and receive their shards from it (one model copy per group, not one per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.tiny import save_model, tiny_causal_lm


@pytest.mark.parametrize("arch", ["gemma"])  # tied embeddings and a buffer outside the state dict
def test_other_processes_load_nothing_and_hold_the_main_process_weights(arch, sp_tokenizer, tmp_path):
    model = tiny_causal_lm(arch, sp_tokenizer, layers=2)
    assert model.config.tie_word_embeddings
    model_dir = save_model(model, sp_tokenizer, tmp_path / "model")
    results = tmp_path / "results"
    results.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(Path(__file__).with_name("meta_load_worker.py")), str(model_dir), str(results)],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    main, other = (json.loads((results / f"rank{r}.json").read_text()) for r in (0, 1))
    assert main["loaded_bytes"] == main["model_bytes"] > 0  # the main process read the checkpoint
    assert other["loaded_bytes"] == 0  # the other built it without weights
    assert main["weights_diff"] == 0.0 and main["tied"]  # what the group holds is the checkpoint
    for rank in (main, other):  # buffers (Gemma's embedding scale, rotary frequencies) and the forward pass
        assert rank["buffers_diff"] == 0.0, rank
        assert rank["loss_diff"] < 1e-5, rank
