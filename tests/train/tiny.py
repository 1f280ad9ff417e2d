"""Tiny real things for the training tests: tokenizers trained here on mirror sentences, small causal LMs."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from alignx.config import TokenizerSpec
from alignx.data.instructions import PROMPT_TEMPLATE
from alignx.model.bootstrap import template_sentences, train_tokenizer
from tests.train.tatoeba_shards import tatoeba_pairs

LANGS = ("de", "fr", "ru", "zh")


def mirror_sentences(mirror: Path, per_lang: int = 300) -> list[str]:
    """Both sides of the first Tatoeba pairs of a few languages (Latin, Cyrillic and Han script)."""
    return [s for lang in LANGS for pair in tatoeba_pairs(mirror, lang, per_lang) for s in pair]


def sentencepiece_tokenizer(mirror: Path, out_dir: Path, vocab_size: int = 2000):
    """The bootstrap's SentencePiece tokenizer (Llama-style, byte fallback, BOS by default)."""
    sentences = mirror_sentences(mirror) + template_sentences(["en", *LANGS], 50)
    return train_tokenizer(sentences, TokenizerSpec(vocab_size=vocab_size), out_dir)


# Qwen2's pre-tokenizer pattern: punctuation runs keep their trailing newlines (".\n\n" is one piece),
# so a sentence's final "." and the template's newlines can merge into one token across a span boundary.
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_level_tokenizer(mirror: Path, qwen_style: bool = False, vocab_size: int = 800):
    """A GPT-2-style byte-level BPE (no BOS), or with ``qwen_style`` Qwen2's split pattern."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if qwen_style:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = mirror_sentences(mirror) + [PROMPT_TEMPLATE.format(instruction="Translate.", input="x.")] * 20
    tok.train_from_iterator(text, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<pad>")


ARCHS = {
    "llama": dict(model_type="llama"),
    "qwen2": dict(model_type="qwen2"),
    "mistral": dict(model_type="mistral", sliding_window=None),
    "gemma": dict(model_type="gemma", head_dim=16),
}


def tiny_causal_lm(arch: str, tokenizer, layers: int = 3, hidden: int = 32, seed: int = 0):
    """A freshly initialised small model of the given architecture, sized to the tokenizer."""
    spec = dict(ARCHS[arch])
    model_type = spec.pop("model_type")
    config = AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=2, intermediate_size=2 * hidden,
        max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, **spec,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def save_model(model, tokenizer, out_dir: Path) -> Path:
    """A checkpoint directory that ``AutoModelForCausalLM.from_pretrained`` loads (as stages expect)."""
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
