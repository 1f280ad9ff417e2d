"""The offline base model: a SentencePiece tokenizer and a small Llama built from ``ModelSpec``.

Used when no pretrained base model is configured (the default offline run): the tokenizer is trained
on sentences of the training shards, the model is pre-trained on their monolingual sides with the
shared training loop (see ``alignx.train.training_stages.bootstrap_base_model``).
"""

from __future__ import annotations

import io
import logging
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import sentencepiece as spm
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer, PreTrainedTokenizerBase

from alignx.config import ModelSpec, TokenizerSpec
from alignx.data.instructions import (
    PROMPT_TEMPLATE, PROMPT_TEMPLATE_NO_INPUT, EncodedExample, TrainExample, translation_instruction,
)

log = logging.getLogger(__name__)

PAD_PIECE = "<pad>"


def template_sentences(languages: Sequence[str], repeats: int) -> list[str]:
    """The instruction template's lines and every translation instruction, ``repeats`` times each.

    Fed to the tokenizer beside the corpus so the prompt's words become whole pieces: the Alpaca
    preamble then costs about half the tokens, leaving ``max_length`` for the sentences.
    """
    lines = [line for t in (PROMPT_TEMPLATE, PROMPT_TEMPLATE_NO_INPUT) for line in t.split("\n")
             if line.strip() and "{" not in line]
    lines += [translation_instruction(a, b) for a in languages for b in languages if a != b]
    return [line for line in lines for _ in range(repeats)]


def sample_sentences(sentences: Sequence[str], limit: int, seed: int) -> list[str]:
    """Up to ``limit`` distinct sentences, a seeded sample in a stable order."""
    unique = list(dict.fromkeys(s for s in sentences if s.strip()))
    if len(unique) > limit:
        unique = random.Random(seed).sample(unique, limit)
    return unique


def fitting_character_coverage(sentences: Sequence[str], spec: TokenizerSpec) -> float:
    """``spec.character_coverage``, lowered when that many distinct characters would not fit the vocabulary.

    SentencePiece fails when the covered characters outnumber the vocabulary (many Han characters,
    a small vocabulary). With byte fallback the rare characters still encode, as UTF-8 bytes, so
    covering fewer characters loses nothing but compactness. The budget leaves the 256 byte pieces,
    the 4 special pieces and an eighth of the vocabulary for merges.
    """
    counts = Counter(ch for s in sentences for ch in s if not ch.isspace())
    total = sum(counts.values())
    budget = spec.vocab_size - 256 - 4 - max(64, spec.vocab_size // 8)
    if total == 0 or budget <= 0:
        return spec.character_coverage
    freqs = sorted(counts.values(), reverse=True)
    covered, needed = 0, 0
    for f in freqs:
        if covered / total >= spec.character_coverage:
            break
        covered += f
        needed += 1
    if needed <= budget:
        return spec.character_coverage
    fitted = sum(freqs[:budget]) / total
    log.warning("character_coverage %.4f needs %d characters, more than the vocabulary of %d leaves room for; "
                "using %.4f (the rest encode as bytes)", spec.character_coverage, needed, spec.vocab_size, fitted)
    return fitted


def train_tokenizer(sentences: Sequence[str], spec: TokenizerSpec, out_dir: Path):
    """Train a byte-fallback SentencePiece BPE model on ``sentences`` and wrap it as a HF tokenizer.

    Identity normalisation (as Llama's tokenizer) keeps text round-trips exact, so decoding a span
    gives back its sentence. The tokenizer adds BOS by default and pads with its own ``<pad>`` piece.
    ``out_dir`` receives ``tokenizer.model`` and the Hugging Face files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    coverage = fitting_character_coverage(sentences, spec)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            model_type="bpe",
            vocab_size=spec.vocab_size,
            character_coverage=coverage,
            byte_fallback=True,
            split_digits=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            unk_id=0, bos_id=1, eos_id=2, pad_id=3, pad_piece=PAD_PIECE,
            input_sentence_size=spec.max_sentences,
            shuffle_input_sentence=False,  # the caller's seeded sample is the input
            num_threads=1,  # one thread: the same sentences give the same model on every machine
            minloglevel=2,
        )
    except RuntimeError as exc:
        advice = (" Raise bootstrap.tokenizer.vocab_size or lower bootstrap.tokenizer.character_coverage."
                  if "required_chars" in str(exc) or "Vocabulary size" in str(exc) else "")
        raise ValueError(
            f"SentencePiece training failed for vocab_size={spec.vocab_size}, character_coverage="
            f"{coverage} on {len(sentences)} sentences: {exc}.{advice}"
        ) from None
    for stale in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (out_dir / stale).unlink(missing_ok=True)  # from_pretrained would prefer them to the new model
    (out_dir / "tokenizer.model").write_bytes(model.getvalue())
    tokenizer = LlamaTokenizer.from_pretrained(
        str(out_dir), add_bos_token=True, add_eos_token=False, pad_token=PAD_PIECE
    )
    probe = [s for s in sentences[:20]]
    if not probe or any(len(tokenizer(s, add_special_tokens=False)["input_ids"]) == 0 for s in probe):
        raise RuntimeError(f"the SentencePiece tokenizer in {out_dir} encodes sentences to nothing; "
                           "the conversion to a Hugging Face tokenizer failed")
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def build_llama(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialised (seeded) small Llama with the tokenizer's vocabulary and special ids."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def packed_lm_examples(
    tokenizer: PreTrainedTokenizerBase, sentences: Sequence[str], block: int, chunk: int = 4096
) -> list[TrainExample]:
    """Sentences as ``[BOS] text [EOS]`` streams, concatenated and cut into blocks of ``block`` tokens.

    Packing keeps every step's token count fixed (no padding), which is what pre-training wants.
    """
    stream: list[int] = []
    eos = tokenizer.eos_token_id
    for start in range(0, len(sentences), chunk):
        for ids in tokenizer(list(sentences[start : start + chunk]))["input_ids"]:
            stream.extend(ids)
            stream.append(eos)
    blocks = [stream[i : i + block] for i in range(0, len(stream) - block + 1, block)]
    if not blocks:
        raise ValueError(f"{len(sentences)} sentences give {len(stream)} tokens, fewer than one block of {block}")
    return [TrainExample(EncodedExample(b, 0, None, None)) for b in blocks]
