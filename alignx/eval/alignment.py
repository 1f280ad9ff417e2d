"""Cross-lingual alignment of sentence representations, layer by layer, on multi-way parallel text.

A sentence's representation at layer k is the mean of ``hidden_states[k]`` over its tokens (index 0
is the embedding output, index k the output of block k, the last the final-normed output). Only the
reported layers are computed: the forward pass stops after the deepest of them and never reaches the
vocabulary projection (``hidden_states_at``). Two encodings: ``alone`` (the sentence by itself, special tokens left out of
the mean) and ``prompt`` (the sentence as the input of the stage-1 translation prompt towards the
other side's language, no response, pooled over its span: the representation L_ctr trains).
Per sentence and layer we keep whether X->en and en->X top-1 retrieval among all sentences is right,
and its cosine gap: cos(own translation) minus the mean cosine to every other sentence (the expected
cosine of a random pair), so every metric is a mean over sentences and can be bootstrapped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from alignx.config import check_alignment_layers
from alignx.data.instructions import encode_examples, translation_instruction
from alignx.eval.loglik import model_max_length
from alignx.eval.process_split import split_gather
from alignx.model.alignx_model import num_layers, position_ids_from_mask

ENCODINGS = ("alone", "prompt")
METRICS = ("x2en_top1", "en2x_top1", "cos_gap")
LayerSpec = str | Sequence[int]  # "all", "every-K" or hidden_states indices (eval.alignment.layers)


@dataclass(frozen=True)
class AlignmentScores:
    """Per-layer, per-sentence results of one language against the pivot: arrays [layers, sentences].

    Row r of each array is hidden_states index ``layers[r]`` (every index 0..n when all were computed).
    """

    x2en_top1: np.ndarray
    en2x_top1: np.ndarray
    cos_gap: np.ndarray
    layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.layers:  # built without layer ids: rows are indices 0..L-1
            object.__setattr__(self, "layers", tuple(range(self.x2en_top1.shape[0])))

    def row(self, layer: int) -> int:
        """The array row holding hidden_states index ``layer``."""
        if layer not in self.layers:
            raise ValueError(f"layer {layer} was not computed (computed: {list(self.layers)})")
        return self.layers.index(layer)

    def by_layer(self) -> dict[str, list[float]]:
        """Mean over sentences of each metric, one value per computed layer, and ``layers``: their indices."""
        return {"layers": list(self.layers), **{m: getattr(self, m).mean(axis=1).tolist() for m in METRICS}}


# ---------------------------------------------------------------- which layers
def resolve_layers(spec: LayerSpec, n_layers: int, report_layer: int | None = None) -> list[int]:
    """The hidden_states indices to compute for a model of ``n_layers`` blocks, sorted, report layer included.

    ``"all"``: 0..n_layers; ``"every-K"``: 0, K, 2K, ... and the last; a list: those indices.
    """
    check_alignment_layers(spec)
    if spec == "all":
        layers = list(range(n_layers + 1))
    elif isinstance(spec, str):
        step = int(spec.removeprefix("every-"))
        layers = [*range(0, n_layers + 1, step), n_layers]
    else:
        bad = [k for k in spec if k > n_layers]
        if bad:
            raise ValueError(f"alignment layers {bad} are out of range 0..{n_layers} for this model "
                             f"(hidden_states indices of {n_layers} blocks)")
        layers = list(spec)
    if report_layer is not None:
        layers.append(report_layer)
    return sorted(set(layers))


# ---------------------------------------------------------------- the parallel sets
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


class _StopForward(Exception):
    """Raised by a hook once the deepest wanted layer has run: nothing after it is needed."""


def _decoder_blocks(model) -> tuple[nn.Module, nn.ModuleList] | None:
    """The decoder stack (``get_decoder()``) and its blocks, where the model has the usual layout."""
    get_decoder = getattr(model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    blocks = getattr(decoder, "layers", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) != num_layers(model):
        return None
    return decoder, blocks


def _first(value) -> Tensor:
    return value[0] if isinstance(value, tuple | list) else value


def hidden_states_at(model, input_ids: Tensor, attention_mask: Tensor, layers: Sequence[int]) -> list[Tensor]:
    """``hidden_states[k]`` of the model for each k in ``layers``, computing no more than needed.

    Forward hooks on the decoder's blocks take block k's output (index k; index 0 is the first block's
    input) and stop the pass after the deepest block wanted. The last index is the final-normed
    output, which the decoder stack returns as ``last_hidden_state``; the vocabulary projection is
    never run. A model without a ``get_decoder().layers`` stack falls back to the full forward pass.
    Position ids count from each row's first real token, so left and right padding agree.
    """
    n = num_layers(model)
    wanted = sorted(set(layers))
    if not wanted or wanted[0] < 0 or wanted[-1] > n:
        raise ValueError(f"layers {list(layers)} must be hidden_states indices within 0..{n}")
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask,
                  position_ids=position_ids_from_mask(attention_mask), use_cache=False)
    found = _decoder_blocks(model)
    if found is None:
        hidden = model(**inputs, output_hidden_states=True, logits_to_keep=1).hidden_states
        return [hidden[k] for k in layers]
    decoder, blocks = found
    deepest = wanted[-1]
    captured: dict[int, Tensor] = {}

    def keep(k: int, state: Tensor) -> None:
        captured[k] = state
        if k == deepest:
            raise _StopForward

    handles = []
    if 0 in wanted:
        handles.append(blocks[0].register_forward_pre_hook(
            lambda _m, args, kwargs: keep(0, args[0] if args else kwargs["hidden_states"]), with_kwargs=True))
    for k in wanted:
        if 0 < k < n:
            handles.append(blocks[k - 1].register_forward_hook(
                lambda _m, _args, output, k=k: keep(k, _first(output))))
    try:
        out = decoder(**inputs)
        captured[n] = out.last_hidden_state  # reached only when the last index is wanted
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return [captured[k] for k in layers]


@torch.inference_mode()
def pooled_states(
    model, sequences: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]], batch_size: int = 16,
    pad_id: int = 0, progress: Callable[[int], None] | None = None, layers: Sequence[int] | None = None,
) -> np.ndarray:
    """Mean of the hidden states over each span at each of ``layers`` (default: all, 0..n):
    float32 array [len(layers), sentences, hidden]. Under several processes each pools its share."""
    def here(idx: list[int]) -> list[np.ndarray]:
        part = _pooled_here(model, [sequences[i] for i in idx], [spans[i] for i in idx], batch_size, pad_id,
                            progress, layers)
        return [part[:, k] for k in range(len(idx))]

    return np.stack(split_gather(len(sequences), here, progress=progress), axis=1)


def _pooled_here(
    model, sequences: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]], batch_size: int,
    pad_id: int, progress: Callable[[int], None] | None, layers: Sequence[int] | None,
) -> np.ndarray:
    device = next(model.parameters()).device
    layers = list(range(num_layers(model) + 1)) if layers is None else list(layers)
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
        hidden = hidden_states_at(model, ids.to(device), mask.to(device), layers)
        pool = pool.to(device)
        pooled = [torch.einsum("btd,bt->bd", h.float(), pool).cpu().numpy() for h in hidden]
        if out is None:
            out = np.zeros((len(layers), len(sequences), pooled[0].shape[1]), dtype=np.float32)
        for r, p in enumerate(pooled):
            out[r, batch] = p
        if progress:
            progress(len(batch))
    assert out is not None, "no sentences to encode"
    return out


def retrieval_scores(x: np.ndarray, e: np.ndarray, layers: Sequence[int] = ()) -> AlignmentScores:
    """Top-1 retrieval both ways and cosine gaps per layer and sentence, for x[l, i] <-> e[l, i].

    ``layers`` names the hidden_states index of each row (default 0..L-1)."""
    xn = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    en = e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
    sim = np.matmul(xn, en.transpose(0, 2, 1))  # [layers, n, n]
    n = sim.shape[1]
    idx = np.arange(n)
    diag = sim[:, idx, idx]
    x2en = (sim.argmax(axis=2) == idx).astype(np.int8)
    en2x = (sim.argmax(axis=1) == idx).astype(np.int8)
    others = (sim.sum(axis=2) - diag) / max(n - 1, 1)
    return AlignmentScores(x2en, en2x, (diag - others).astype(np.float32), tuple(layers))


def evaluate_alignment(
    model,
    tokenizer,
    texts: dict[str, list[str]],
    pivot: str,
    encoding: str,
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
    layers: Sequence[int] | None = None,
) -> dict[str, AlignmentScores]:
    """Alignment of every non-pivot language in ``texts`` with the pivot, in one encoding.

    ``layers``: the hidden_states indices to compute (``resolve_layers``); default all, 0..n.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; known: {', '.join(ENCODINGS)}")
    layers = list(range(num_layers(model) + 1)) if layers is None else sorted(set(layers))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    max_length = model_max_length(model, tokenizer)

    def states(lang: str, other: str) -> np.ndarray:
        if encoding == "alone":
            ids, spans = encode_alone(tokenizer, texts[lang])
        else:
            ids, spans = encode_in_prompt(tokenizer, texts[lang], lang, other, max_length)
        return pooled_states(model, ids, spans, batch_size, pad_id, progress, layers)

    pivot_alone = states(pivot, pivot) if encoding == "alone" else None
    results = {}
    for lang in texts:
        if lang == pivot:
            continue
        e = pivot_alone if pivot_alone is not None else states(pivot, lang)
        results[lang] = retrieval_scores(states(lang, pivot), e, layers)
    return results
