"""Batches: deterministic micro-batch order (optionally grouped by length) and padding collation.

The order depends only on the examples' lengths, the batch size and the seed, never on the loss, so
the control and AlignX arms see the same batches; a resumed run finds its place by micro-batch index.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from alignx.data.instructions import TrainExample

IGNORE_INDEX = -100  # label of a position the loss skips (padding, a masked prompt): torch's default

_MEGABATCH = 50  # group-by-length sorts within windows of this many batches (as HF's sampler does)


def _cut(order: list[int], batch_size: int, groups: Sequence[int] | None) -> list[list[int]]:
    """Cut ``order`` into batches; an example whose group is already in the open batch waits for the next.

    Groups keep the two directions of one translation pair (same texts, same length, so neighbours
    after sorting by length) out of one micro-batch, where one would be the other's false negative.
    """
    if groups is None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    current: list[int] = []
    seen: set[int] = set()
    waiting: list[int] = []
    for i in [*order, None]:
        queue, waiting = waiting + ([] if i is None else [i]), []
        for j in queue:
            if groups[j] >= 0 and groups[j] in seen:
                if i is not None:
                    waiting.append(j)
                    continue
                batches.append(current)  # the end: close early rather than pair the twins
                current, seen = [], set()
            current.append(j)
            seen.add(groups[j])
            if len(current) == batch_size:
                batches.append(current)
                current, seen = [], set()
    return batches + ([current] if current else [])


def epoch_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, group_by_length: bool,
    groups: Sequence[int] | None = None,
) -> list[list[int]]:
    """One epoch's micro-batches of example indices (the last one may be smaller).

    With ``group_by_length`` the shuffled indices are cut into windows of ``_MEGABATCH`` batches,
    each sorted by length and cut into batches, so batches hold similar lengths (less padding); the
    window's batches are then shuffled (unlike HF's sampler, which walks each window from long to
    short: a drift in the data from step to step). The batch holding the longest example goes first,
    so an out-of-memory error shows at once.
    ``groups`` (-1: none) keeps examples of one group in different micro-batches.
    """
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not group_by_length:
        return _cut(order, batch_size, groups)
    window = _MEGABATCH * batch_size
    batches: list[list[int]] = []
    for w in range(0, len(order), window):
        cut = _cut(sorted(order[w : w + window], key=lambda i: -lengths[i]), batch_size, groups)
        rng.shuffle(cut)  # no long-to-short drift across consecutive steps: steps stay i.i.d.
        batches.extend(cut)
    longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
    batches[0], batches[longest] = batches[longest], batches[0]
    return batches


def micro_batch_schedule(
    lengths: Sequence[int], batch_size: int, count: int, seed: int, group_by_length: bool,
    groups: Sequence[int] | None = None,
) -> list[list[int]]:
    """The first ``count`` micro-batches of the run, epoch after epoch (each epoch reshuffled)."""
    if not lengths:
        raise ValueError("no training examples: the micro-batch schedule would be empty")
    out: list[list[int]] = []
    epoch = 0
    while len(out) < count:
        out.extend(epoch_batches(lengths, batch_size, seed, epoch, group_by_length, groups))
        epoch += 1
    return out[:count]


def collate(
    examples: Sequence[TrainExample],
    pad_id: int,
    padding_side: str = "left",
    mask_prompt: bool = False,
) -> dict[str, torch.Tensor]:
    """Pad a micro-batch and carry the spans, shifted by the left padding where there is any.

    Returns input_ids, attention_mask, labels (padding and, when masked, the prompt at -100),
    src_span / tgt_span [B, 2] (zeros where absent), span_ok [B] (both spans present: the example
    counts for L_ctr and L_lam) and src_lang / tgt_lang [B].
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    width = max(len(ex.encoded.input_ids) for ex in examples)
    b = len(examples)
    input_ids = torch.full((b, width), pad_id, dtype=torch.long)
    labels = torch.full((b, width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((b, width), dtype=torch.long)
    spans = torch.zeros((2, b, 2), dtype=torch.long)
    span_ok = torch.zeros(b, dtype=torch.bool)
    for row, ex in enumerate(examples):
        enc = ex.encoded
        n = len(enc.input_ids)
        offset = width - n if padding_side == "left" else 0
        input_ids[row, offset : offset + n] = torch.tensor(enc.input_ids)
        labels[row, offset : offset + n] = torch.tensor(enc.labels(mask_prompt))
        attention[row, offset : offset + n] = 1
        if enc.src_span is not None and enc.tgt_span is not None:
            span_ok[row] = True
            spans[0, row] = torch.tensor(enc.src_span) + offset
            spans[1, row] = torch.tensor(enc.tgt_span) + offset
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "labels": labels,
        "src_span": spans[0],
        "tgt_span": spans[1],
        "span_ok": span_ok,
        "src_lang": torch.tensor([ex.src_lang for ex in examples], dtype=torch.long),
        "tgt_lang": torch.tensor([ex.tgt_lang for ex in examples], dtype=torch.long),
    }
