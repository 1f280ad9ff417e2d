"""Tiny random models of real architectures with their real vocabularies, for family-specific code paths.

Llama 3, Qwen3 and Gemma 3 each get a 3-layer, width-32 model built from a small config but sized to
the real tokenizer from the data mirror (``tokenizers/<name>/``: 128k, 152k and 262k rows), so
attention masks, rotary positions under left padding, hidden-state indexing and tied embeddings
take the same code paths as the released models, in seconds.
"""

from __future__ import annotations

import gzip
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3TextConfig, LlamaConfig, Qwen3Config

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class Family:
    """One architecture: its tokenizer folder in the mirror, config class and the settings that matter."""

    name: str
    tokenizer: str
    config_class: type
    tied: bool
    extra: dict[str, Any] = field(default_factory=dict)


FAMILIES = {
    # Llama 3 8B unties its LM head; its tokenizer has no pad token
    "llama": Family("llama", "llama3", LlamaConfig, tied=False, extra={"rope_theta": 500000.0}),
    # Qwen3 small models tie the head; q/k norms
    "qwen3": Family("qwen3", "qwen3", Qwen3Config, tied=True),
    # Gemma 3: tied head, scaled embeddings, local sliding-window layers between global ones (a window
    # shorter than the examples, so the sliding mask under padding is exercised); no logit soft-capping
    "gemma3": Family("gemma3", "gemma3", Gemma3TextConfig, tied=True, extra={
        "sliding_window": 16, "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
        "query_pre_attn_scalar": 16,
    }),
}
# Preferred pad tokens of a tokenizer that has none: a reserved special token never seen in text
PAD_CANDIDATES = ("<|finetune_right_pad_id|>", "<|reserved_special_token_0|>")


def real_tokenizer(mirror: Path, name: str, work_dir: Path):
    """The real tokenizer ``name`` (llama3, qwen3, gemma3) from the mirror's gzipped files, with a pad token."""
    folder = Path(work_dir) / f"tokenizer-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    for file in TOKENIZER_FILES:
        with gzip.open(mirror / "tokenizers" / name / f"{file}.gz", "rb") as src, (folder / file).open("wb") as dst:
            shutil.copyfileobj(src, dst)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.pad_token_id is None:
        vocab = tokenizer.get_vocab()
        tokenizer.pad_token = next((t for t in PAD_CANDIDATES if t in vocab), tokenizer.eos_token)
    return tokenizer


def tiny_model(family: Family, tokenizer, layers: int = 3, hidden: int = 32, seed: int = 0):
    """A freshly initialised ``layers``-block model of ``family`` with the tokenizer's whole vocabulary."""
    config = family.config_class(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=1024,
        tie_word_embeddings=family.tied, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, **family.extra,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def build_base(mirror: Path, family: Family, out_dir: Path):
    """Save a tiny model of ``family`` and its real tokenizer as a checkpoint dir; returns (dir, tokenizer)."""
    out_dir = Path(out_dir)
    tokenizer = real_tokenizer(mirror, family.tokenizer, out_dir.parent)
    model = tiny_model(family, tokenizer)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir, tokenizer
