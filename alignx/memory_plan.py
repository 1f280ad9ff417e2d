"""Memory plan: per-device bytes of a training stage under DDP, FSDP or LoRA, from the model's shape alone.

Activations are what autograd keeps for backward, per token of a full micro-batch (B x max_length,
padded), for a Llama-style block with SDPA attention and a SwiGLU MLP; c is the compute dtype's size
(2 under bf16/fp16 autocast, 4 in float32); h, q, kv, i the hidden, heads x head_dim, kv_heads x
head_dim and MLP widths:
  layer = (16 + 2c) h + c (4q + 4i) + 4 (heads + 2)  [+ (4 + c)(q + kv) + 4 (heads + kv_heads) with q/k norms]
  top   = (8 + c) h + 12 vocab + 4 T + 8 head_dim  (final norm; fp32 log-probs, their gradient and the
          logits' gradient alive together at the start of backward; the padding mask; rope cos/sin);
          under train.loss_chunk_tokens the 12 vocab is paid for one chunk of positions, not per token
(residual stream and norms in fp32; k and v repeated to all heads, as transformers does under a padding
mask; no attention matrix), plus c r per LoRA target and stage 1's head on all (2B)^2 pairs. The
hidden-state list of ``output_hidden_states`` holds the layer inputs the graph keeps anyway, so it adds
nothing. Gradient checkpointing keeps 4h per layer plus one layer.
Gradients are counted resident through the step (true under accumulation; with accumulation 1 and
``zero_grad(set_to_none=True)`` the real peak is lower by up to the gradients). Measured against a
real CPU training step in tests/test_memory_plan.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from alignx.config import REPO_ROOT, LoraConfig, PipelineConfig, TrainConfig
from alignx.model.base_models import classify
from alignx.model.gguf_conversion import read_gguf_header
from alignx.model.model_catalogue import BaseModelError, load_catalogue

SHAPES_FILE = REPO_ROOT / "data" / "model_shapes.yaml"
RESERVED_FRACTION = 0.10  # of each GPU: CUDA context, NCCL buffers, allocator fragmentation
Strategy = Literal["ddp", "fsdp", "lora"]
STRATEGIES: tuple[Strategy, ...] = ("ddp", "fsdp", "lora")


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on: exact parameter counts and the widths of a decoder block."""

    name: str
    params: int
    linear_params: int  # weights of the matrix products (lm_head included): autocast's bf16 copies
    layer_params: int  # one decoder layer (an FSDP unit)
    largest_param: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    qk_norm: bool

    def lora_params(self, lora: LoraConfig) -> int:
        """Adapter parameters: r (in + out) for each target projection of each layer."""
        q, kv, h, i = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.hidden, self.intermediate
        widths = {"q_proj": h + q, "k_proj": h + kv, "v_proj": h + kv, "o_proj": q + h,
                  "gate_proj": h + i, "up_proj": h + i, "down_proj": i + h}
        unknown = [t for t in lora.target_modules if t not in widths]
        if unknown:
            raise ValueError(f"lora.target_modules {unknown}: the plan knows the projections {', '.join(widths)}")
        return lora.r * self.layers * sum(widths[t] for t in lora.target_modules)


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes on one device; ``total`` = the four parts, activations or the optimizer step's temporaries."""

    params: int
    grads: int
    optimizer: int
    activations: int
    step_transient: int

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + max(self.activations, self.step_transient)


@dataclass(frozen=True)
class PlanRow:
    stage: str
    shape: ModelShape
    strategy: Strategy
    configured: bool  # the strategy the stage's settings select (train.lora, train.sharding)
    estimate: MemoryEstimate
    fits: bool
    with_checkpointing: MemoryEstimate | None  # when the stage trains without it


# ---------------------------------------------------------------- the model's shape
def shape_from_config(config: Any, name: str) -> ModelShape:
    """Shape of a transformers config, parameters counted on a model built on the meta device."""
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    text = config.get_text_config()
    layers = next(m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == text.num_hidden_layers)
    heads = text.num_attention_heads
    return ModelShape(
        name=name, params=sum(p.numel() for p in model.parameters()),
        linear_params=sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear)),
        layer_params=sum(p.numel() for p in layers[0].parameters()),
        largest_param=max(p.numel() for p in model.parameters()),
        hidden=text.hidden_size, layers=text.num_hidden_layers, heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
        intermediate=text.intermediate_size, vocab=text.vocab_size, tied=bool(text.tie_word_embeddings),
        qk_norm=any(n.endswith("q_norm") for n, _ in model.named_modules()))


def gguf_shape(path: Path, name: str) -> ModelShape:
    """Shape of a GGUF model from its header: metadata for the widths, the tensor table for exact counts."""
    from alignx.model.gguf_header import read_header

    arch = read_gguf_header(path)["architecture"]  # refuses a truncated or foreign file, saying why
    header = read_header(path)
    meta, sizes = header["metadata"], {n: math.prod(shape) for n, shape, *_ in header["tensors"]}
    try:
        hidden, heads = meta[f"{arch}.embedding_length"], meta[f"{arch}.attention.head_count"]
        vocab = meta.get(f"{arch}.vocab_size") or meta["tokenizer.ggml.tokens"]["length"]
        intermediate = meta[f"{arch}.feed_forward_length"]
    except KeyError as exc:
        raise BaseModelError(f"{path} has no {exc.args[0]} metadata: cannot plan its memory") from None
    tied = "output.weight" not in sizes
    matrices = sum(math.prod(dims) for n, dims, *_ in header["tensors"] if len(dims) == 2 and n != "token_embd.weight")
    return ModelShape(
        name=name, params=sum(sizes.values()), linear_params=matrices + (vocab * hidden if tied else 0),
        layer_params=sum(s for n, s in sizes.items() if n.startswith("blk.0.")), largest_param=max(sizes.values()),
        hidden=hidden, layers=meta[f"{arch}.block_count"], heads=heads,
        kv_heads=meta.get(f"{arch}.attention.head_count_kv", heads),
        head_dim=meta.get(f"{arch}.attention.key_length", hidden // heads), intermediate=intermediate,
        vocab=vocab, tied=tied, qk_norm="blk.0.attn_q_norm.weight" in sizes)


def published_shape(name: str, shapes_file: Path = SHAPES_FILE) -> ModelShape | None:
    """The shape recorded for ``name`` (or an alias) in data/model_shapes.yaml, checked against its count."""
    from transformers import AutoConfig

    entries = (yaml.safe_load(shapes_file.read_text(encoding="utf-8")) or {}).get("models", {})
    for key, entry in entries.items():
        if name == key or name in entry.get("aliases", []):
            fields = dict(entry["config"])
            shape = shape_from_config(AutoConfig.for_model(fields.pop("model_type"), **fields), name)
            if shape.params != entry["params"]:
                raise BaseModelError(f"{shapes_file}: {key} builds {shape.params:,} parameters but the entry "
                                     f"says {entry['params']:,}; fix its config")
            return shape
    return None


def base_model_shape(spec: str, models_dir: Path | None = None) -> ModelShape:
    """Shape of a base model spec (directory, .gguf, catalogue name, hub id) without reading weights.

    A catalogue model is read from its converted checkpoint in ``models_dir``, its installed GGUF, or
    data/model_shapes.yaml; a hub id from its config (online or the HF cache), else that file.
    """
    from transformers import AutoConfig

    kind, target = classify(spec)
    if kind == "dir":
        if not (target / "config.json").is_file():
            raise BaseModelError(f"{target} is not a Hugging Face model directory: no config.json")
        return shape_from_config(AutoConfig.from_pretrained(target), spec)
    if kind == "gguf":
        return gguf_shape(target, spec)
    if kind == "catalogue":
        import importlib.util

        pattern = f"base-{target.name}-{target.sha256[:12]}-*/config.json"  # as prepare_base_model names it
        converted = sorted(Path(models_dir).glob(pattern)) if models_dir else []
        if converted:
            return shape_from_config(AutoConfig.from_pretrained(converted[0].parent), spec)
        found = importlib.util.find_spec(target.module)
        gguf = Path(list(found.submodule_search_locations)[0]) / target.file if found and target.file else None
        if gguf is not None and gguf.is_file():
            return gguf_shape(gguf, spec)
        return published_shape(spec) or _no_shape(spec, f"install it ({target.install_hint()})")
    repo_id, revision = target
    try:
        return shape_from_config(AutoConfig.from_pretrained(repo_id, revision=revision), spec)
    except (OSError, ValueError) as exc:
        return published_shape(repo_id) or _no_shape(
            spec, f"its config cannot be fetched ({type(exc).__name__}); download it "
                  f"(`hf download {repo_id} config.json --local-dir DIR`) and give DIR as base_model")


def _no_shape(spec: str, what_to_do: str) -> ModelShape:
    known = sorted((yaml.safe_load(SHAPES_FILE.read_text(encoding="utf-8")) or {}).get("models", {}))
    raise BaseModelError(f"no shape for base model {spec!r}: {what_to_do}, or add its published shape to "
                         f"{SHAPES_FILE.relative_to(REPO_ROOT)} (known there: {', '.join(known)}; catalogue: "
                         f"{', '.join(sorted(load_catalogue()))})")


def bootstrap_shape(cfg: PipelineConfig) -> ModelShape:
    """The locally built bootstrap Llama (as alignx.model.bootstrap.build_llama makes it)."""
    from transformers import LlamaConfig

    spec = cfg.bootstrap.model
    return shape_from_config(LlamaConfig(
        vocab_size=cfg.bootstrap.tokenizer.vocab_size, hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size, max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True), "bootstrap")


def model_shape(cfg: PipelineConfig) -> ModelShape:
    """Shape of the model stages 1 and 2 train: the base model, or the bootstrap model when there is none."""
    if cfg.base_model is None:
        return bootstrap_shape(cfg)
    return base_model_shape(cfg.base_model, cfg.resolved_run_root() / "models")


# ---------------------------------------------------------------- bytes
def activation_bytes(shape: ModelShape, train: TrainConfig, c: int, *, head_width: int | None = None,
                     lora: LoraConfig | None = None) -> int:
    """Bytes autograd keeps for one full micro-batch at its peak (the formula of the module docstring)."""
    h, q, kv, i = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim, shape.intermediate
    layer = (16 + 2 * c) * h + c * (4 * q + 4 * i) + 4 * (shape.heads + 2)
    layer += c * lora.r * len(lora.target_modules) if lora else 0  # each adapter's rank-r intermediate
    if shape.qk_norm:
        layer += (4 + c) * (q + kv) + 4 * (shape.heads + shape.kv_heads)
    tokens = train.micro_batch_size * train.max_length
    # the float32 log-probabilities and gradients of the whole micro-batch, or of one chunk of positions
    # at a time under train.loss_chunk_tokens
    per_token_vocab, chunk_vocab = 12 * shape.vocab, 0
    if train.loss_chunk_tokens:
        per_token_vocab, chunk_vocab = 0, 12 * shape.vocab * min(train.loss_chunk_tokens, tokens)
    top = (8 + c) * h + per_token_vocab + 4 * train.max_length + 8 * shape.head_dim
    kept = shape.layers * 4 * h + layer if train.gradient_checkpointing else shape.layers * layer
    pairs = (2 * train.micro_batch_size) ** 2 if head_width else 0  # the LaM head judges every ordered pair
    return tokens * (kept + top) + chunk_vocab + 4 * pairs * 4 * (head_width or 0)


def estimate(shape: ModelShape, train: TrainConfig, strategy: Strategy, world_size: int,
             device: Literal["cuda", "cpu"], *, stage1_head_width: int | None = None) -> MemoryEstimate:
    """Peak bytes per device of training ``shape`` with ``train``'s settings under ``strategy``.

    fp32 master weights and AdamW (two fp32 states per trainable parameter). Mixed precision ("auto":
    bf16 on cuda, float32 on cpu) adds autocast's bf16 copies of the matrices (DDP), or unsharded bf16
    units (FSDP2 with bf16 params, fp32 reduction): the root (embeddings, heads) for the whole step and
    two decoder layers at a time; one process shards nothing. LoRA (``train.lora``, else r=16 on every
    projection) keeps the frozen base in the compute dtype (``training_stages.frozen_base_in_bf16``)."""
    mode = train.mixed_precision if train.mixed_precision != "auto" else ("bf16" if device == "cuda" else "no")
    c = 4 if mode == "no" else 2
    head = 2 * (2 * shape.hidden) * stage1_head_width + 2 * stage1_head_width if stage1_head_width else 0
    trainable = shape.params + head
    buckets = 2 if world_size > 1 else 1  # DDP's reducer keeps its own copy of the gradients
    lora = (train.lora or LoraConfig()) if strategy == "lora" else None
    acts = activation_bytes(shape, train, c, head_width=stage1_head_width, lora=lora)
    if strategy == "fsdp" and world_size > 1:
        shard, layer = math.ceil(trainable / world_size), shape.layer_params
        root = trainable - shape.layers * layer
        per_round = train.micro_batch_size * world_size
        accumulating = (train.global_batch_size // per_round if train.global_batch_size else train.grad_accum) > 1
        # between reduce-scatters (gradient sync only on an accumulation round's last micro-batch) every
        # unsharded gradient is kept, accumulated in the fp32 reduce dtype; else (no accumulation, or
        # grad_sync "micro_batch") the root's until the end of backward and one layer's
        unsharded_grads = (4 * trainable if accumulating and train.grad_sync == "step"
                           else c * root + c * layer)
        return MemoryEstimate(4 * shard + c * (root + 2 * layer), 4 * shard + unsharded_grads + 4 * layer,
                              8 * shard, acts, 4 * shard)
    if strategy == "lora":
        adapters = shape.lora_params(lora) + head
        return MemoryEstimate(c * shape.params + 4 * adapters, 4 * adapters * buckets, 8 * adapters, acts,
                              4 * adapters)
    params = 4 * trainable + (c * shape.linear_params if c == 2 else 0)
    return MemoryEstimate(params, 4 * trainable * buckets, 8 * trainable, acts,
                          4 * (trainable if device == "cuda" else shape.largest_param))


def host_bytes(shape: ModelShape, strategy: Strategy, processes_per_node: int, bf16: bool = True) -> dict[str, int]:
    """Host (CPU) memory per node of a GPU stage, beyond the processes' own code and buffers.

    ``load``: the float32 copies read before the weights reach the GPUs. Under FSDP only the main
    process reads the checkpoint (the others build the model on the meta device and receive their
    shards); DDP and LoRA load one copy per process. ``final``: the gathered float32 weights the main
    process writes after a sharded stage (a replicated one writes from the GPU copy, one tensor at a time);
    LoRA under bf16 reads its frozen base in bf16 and, to merge the adapters into exact weights, the
    float32 base once more at the end.
    """
    copy = 4 * shape.params
    if strategy == "fsdp" and processes_per_node > 1:
        return {"load": copy, "final": copy}
    if strategy == "lora" and bf16:
        return {"load": 2 * shape.params * processes_per_node, "final": copy}
    return {"load": copy * processes_per_node, "final": 0}


def configured_strategy(train: TrainConfig, gpus: int) -> Strategy:
    """The strategy a stage's settings select: LoRA, FSDP on more than one GPU, else replicated (DDP)."""
    if train.lora is not None:
        return "lora"
    return "fsdp" if train.sharding == "fsdp" and gpus > 1 else "ddp"


def usable_bytes(gpu_memory_gib: float) -> int:
    """What the plan lets training use of one GPU: its memory less ``RESERVED_FRACTION``."""
    return int(gpu_memory_gib * 2**30 * (1 - RESERVED_FRACTION))


def fits(est: MemoryEstimate, gpu_memory_gib: float) -> bool:
    """Whether the estimate fits one GPU of ``gpu_memory_gib`` after the reserved fraction."""
    return est.total <= usable_bytes(gpu_memory_gib)


def plan(cfg: PipelineConfig, gpus: int, gpu_memory_gib: float, shape: ModelShape | None = None) -> list[PlanRow]:
    """One row per training stage (bootstrap only without a base model) and strategy, on ``gpus`` GPUs."""
    shape = shape or model_shape(cfg)
    stages = [("bootstrap", cfg.bootstrap.train, bootstrap_shape(cfg))] if cfg.base_model is None else []
    stages.append(("stage1", cfg.stage1.train, shape))
    stages += [("stage2", cfg.stage2.train, shape)] if cfg.stage2.enabled else []
    rows = []
    for stage, train, model in stages:
        width = cfg.stage1.lam_width if stage == "stage1" else None
        for strategy in STRATEGIES:
            est = estimate(model, train, strategy, gpus, "cuda", stage1_head_width=width)
            ckpt = None if train.gradient_checkpointing else estimate(
                model, train.model_copy(update={"gradient_checkpointing": True}), strategy, gpus, "cuda",
                stage1_head_width=width)
            configured = strategy == configured_strategy(train, gpus)
            rows.append(PlanRow(stage, model, strategy, configured, est, fits(est, gpu_memory_gib), ckpt))
    return rows
