"""Cross-lingual alignment of sentence representations, at every layer, on multi-way parallel text.

A sentence's representation at layer k is the mean of ``hidden_states[k]`` over its tokens (index 0
is the embedding output). Two encodings: ``alone`` (the sentence by itself, special tokens left out of
the mean) and ``prompt`` (the sentence as the input of the stage-1 translation prompt towards the
other side's language, no response, pooled over its span: the representation L_ctr trains).
Per sentence and layer we keep whether X->en and en->X top-1 retrieval among all sentences is right,
and its cosine gap: cos(own translation) minus the mean cosine to every other sentence (the expected
cosine of a random pair), so every metric is a mean over sentences and can be bootstrapped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from alignx.data.instructions import encode_examples, translation_instruction
from alignx.eval.loglik import model_max_length
from alignx.eval.sources import text_lines
from alignx.languages import get_language
from alignx.mirror import require_mirror_path

ENCODINGS = ("alone", "prompt")
METRICS = ("x2en_top1", "en2x_top1", "cos_gap")


@dataclass(frozen=True)
class AlignmentScores:
    """Per-layer, per-sentence results of one language against the pivot: arrays [layers, sentences]."""

    x2en_top1: np.ndarray
    en2x_top1: np.ndarray
    cos_gap: np.ndarray

    def by_layer(self) -> dict[str, list[float]]:
        """Mean over sentences of each metric, one value per layer."""
        return {m: getattr(self, m).mean(axis=1).tolist() for m in METRICS}


# ---------------------------------------------------------------- the parallel sets
def parallel_file(set_name: str, lang: str) -> str:
    """Path of one language's file of a multi-way parallel set, relative to the data mirror."""
    entry = get_language(lang)
    if set_name == "flores":
        return f"flores200/{entry.flores}.devtest-head500"
    if set_name == "ntrex":
        if entry.ntrex is None:
            raise ValueError(f"NTREX-128 has no file for language {lang!r} in the registry")
        kind = "src" if entry.ntrex == "eng" else "ref"
        return f"ntrex128/newstest2019-{kind}.{entry.ntrex}.txt"
    raise ValueError(f"unknown parallel set {set_name!r}; known: flores, ntrex")


def read_parallel(set_name: str, langs: Sequence[str], mirror: Path | None, limit: int | None = None) -> dict[str, list[str]]:
    """Line-aligned sentences of each language (the first ``limit``); every file must have as many lines."""
    texts, counts = {}, {}
    for lang in langs:
        path = require_mirror_path(mirror, parallel_file(set_name, lang))
        lines = text_lines(path)
        counts[path] = len(lines)
        texts[lang] = lines[:limit] if limit is not None else lines
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"{p.name}: {n}" for p, n in counts.items())
        raise ValueError(f"{set_name} files are not line-aligned (expected equal line counts; found {listing})")
    return texts


# ---------------------------------------------------------------- encoding and pooling
def encode_alone(tokenizer, texts: Sequence[str]) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """Token ids of each sentence alone (default special tokens) and the span of its non-special tokens."""
    enc = tokenizer(list(texts), add_special_tokens=True, return_special_tokens_mask=True)
    ids, spans = [], []
    for row, special in zip(enc["input_ids"], enc["special_tokens_mask"]):
        keep = [k for k, s in enumerate(special) if not s] or [len(row) - 1]
        ids.append(list(row))
        spans.append((keep[0], keep[-1] + 1))
    return ids, spans


def encode_in_prompt(
    tokenizer, texts: Sequence[str], src_lang: str, tgt_lang: str, max_length: int
) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """Token ids of each sentence as the input of the src->tgt translation prompt, and its input span."""
    instruction = translation_instruction(src_lang, tgt_lang)
    encoded = encode_examples(tokenizer, [(instruction, t, None) for t in texts], max_length, add_eos=False)
    bad = [i for i, e in enumerate(encoded) if e.src_span is None]
    if bad:
        raise ValueError(f"sentence {bad[0]} ({src_lang}) lost its span in the prompt (longer than {max_length} tokens?)")
    return [e.input_ids for e in encoded], [e.src_span for e in encoded]


@torch.inference_mode()
def pooled_states(
    model, sequences: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]], batch_size: int = 16,
    pad_id: int = 0, progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Mean of every layer's hidden states over each span: float32 array [layers + 1, sentences, hidden]."""
    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    out: np.ndarray | None = None
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width = max(len(sequences[i]) for i in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        pool = torch.zeros((len(batch), width), dtype=torch.float32)
        for row, i in enumerate(batch):
            ids[row, :len(sequences[i])] = torch.tensor(list(sequences[i]))
            mask[row, :len(sequences[i])] = 1
            s, e = spans[i]
            pool[row, s:e] = 1.0 / (e - s)
        hidden = model(  # logits_to_keep=1: the vocabulary projection is not needed here
            input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True, logits_to_keep=1
        ).hidden_states
        stacked = torch.stack([h.float() for h in hidden])  # [layers+1, batch, width, hidden]
        pooled = torch.einsum("lbtd,bt->lbd", stacked, pool.to(device)).cpu().numpy()
        if out is None:
            out = np.zeros((pooled.shape[0], len(sequences), pooled.shape[2]), dtype=np.float32)
        out[:, batch] = pooled
        if progress:
            progress(len(batch))
    assert out is not None, "no sentences to encode"
    return out


def retrieval_scores(x: np.ndarray, e: np.ndarray) -> AlignmentScores:
    """Top-1 retrieval both ways and cosine gaps per layer and sentence, for x[l, i] <-> e[l, i]."""
    xn = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    en = e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
    sim = np.matmul(xn, en.transpose(0, 2, 1))  # [layers, n, n]
    n = sim.shape[1]
    idx = np.arange(n)
    diag = sim[:, idx, idx]
    x2en = (sim.argmax(axis=2) == idx).astype(np.int8)
    en2x = (sim.argmax(axis=1) == idx).astype(np.int8)
    others = (sim.sum(axis=2) - diag) / max(n - 1, 1)
    return AlignmentScores(x2en, en2x, (diag - others).astype(np.float32))


def evaluate_alignment(
    model,
    tokenizer,
    texts: dict[str, list[str]],
    pivot: str,
    encoding: str,
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
) -> dict[str, AlignmentScores]:
    """Alignment of every non-pivot language in ``texts`` with the pivot, in one encoding."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; known: {', '.join(ENCODINGS)}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    max_length = model_max_length(model, tokenizer)

    def states(lang: str, other: str) -> np.ndarray:
        if encoding == "alone":
            ids, spans = encode_alone(tokenizer, texts[lang])
        else:
            ids, spans = encode_in_prompt(tokenizer, texts[lang], lang, other, max_length)
        return pooled_states(model, ids, spans, batch_size, pad_id, progress)

    pivot_alone = states(pivot, pivot) if encoding == "alone" else None
    results = {}
    for lang in texts:
        if lang == pivot:
            continue
        e = pivot_alone if pivot_alone is not None else states(pivot, lang)
        results[lang] = retrieval_scores(states(lang, pivot), e)
    return results
