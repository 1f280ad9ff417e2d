"""Instruction formatting (the Alpaca template) and tokenisation with exact source/target spans.

Stage 1 trains on translation instructions, stage 2 on translation plus general instructions; both,
and the evaluation's in-prompt encoding, go through ``encode_example`` so the spans mean the same
thing everywhere. This module also builds the instruction rows themselves: translation instructions
from the parallel shards and general instructions from local files or the hub.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from alignx.config import InstructionSource
from alignx.data.schema import INSTRUCTION_SCHEMA, normalise_text
from alignx.languages import get_language

log = logging.getLogger(__name__)

PROMPT_TEMPLATE = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
# Alpaca's variant for instructions without an input (general instructions only).
PROMPT_TEMPLATE_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
INSTRUCTION_FIELDS = ("instruction", "input", "output")


def translation_instruction(src_lang: str, tgt_lang: str) -> str:
    """The instruction of a translation example, e.g. 'Translate the following sentence from German to English.'"""
    src, tgt = get_language(src_lang).name, get_language(tgt_lang).name
    return f"Translate the following sentence from {src} to {tgt}."


@dataclass(frozen=True)
class EncodedExample:
    """One tokenised example.

    ``prompt_len`` tokens precede the response (they are masked from L_lm when the prompt is masked).
    Spans are token positions ``[start, end)`` in ``input_ids``: ``src_span`` covers the input text,
    ``tgt_span`` the response without its final EOS. A span that the length limit cut (even in part)
    is ``None``.
    """

    input_ids: list[int]
    prompt_len: int
    src_span: tuple[int, int] | None
    tgt_span: tuple[int, int] | None

    def labels(self, mask_prompt: bool) -> list[int]:
        """Targets for L_lm: the tokens themselves, with the prompt set to -100 when masked."""
        if not mask_prompt:
            return list(self.input_ids)
        cut = min(self.prompt_len, len(self.input_ids))
        return [-100] * cut + list(self.input_ids[cut:])


def _segments(instruction: str, input_text: str, output_text: str | None) -> list[str]:
    """The prompt split at the span boundaries: [before input, input, before response, response]."""
    if input_text:
        head, tail = PROMPT_TEMPLATE.split("{input}")
        before = head.format(instruction=instruction)
        return [before, input_text, tail, output_text or ""]
    return [PROMPT_TEMPLATE_NO_INPUT.format(instruction=instruction), "", "", output_text or ""]


def _token_boundary(offsets: Sequence[tuple[int, int]], char_pos: int) -> int | None:
    """First token starting at or after ``char_pos`` when no token straddles it, else None."""
    for k, (start, end) in enumerate(offsets):
        if start >= char_pos:
            return k
        if end > char_pos:
            return None  # this token holds characters from both sides of the boundary
    return len(offsets)


def _split_by_offsets(offsets: Sequence[tuple[int, int]], cuts: list[int]) -> list[int] | None:
    """Token index of each character cut, or None when a token crosses one of them."""
    out = []
    for pos in cuts:
        k = _token_boundary(offsets, pos)
        if k is None:
            return None
        out.append(k)
    return out


def encode_example(
    tokenizer,
    instruction: str,
    input_text: str,
    output_text: str | None,
    max_length: int,
    add_eos: bool = True,
) -> EncodedExample:
    """Tokenise one instruction example in the Alpaca template and locate its spans.

    The whole text is tokenised at once (the tokenisation a model sees in context) and spans come
    from the tokenizer's character offsets. When a token crosses a span boundary (e.g. a tokenizer
    that merges a final '.' with the following newlines) or the tokenizer gives no offsets, the
    four segments are tokenised separately and concatenated, so spans are exact for any tokenizer.
    BOS (and other leading special tokens) follow the tokenizer's default; EOS is appended after a
    response when ``add_eos``. Truncation keeps the first ``max_length`` tokens.
    """
    return encode_examples(tokenizer, [(instruction, input_text, output_text)], max_length, add_eos)[0]


def encode_examples(
    tokenizer,
    rows: Sequence[tuple[str, str, str | None]],
    max_length: int,
    add_eos: bool = True,
) -> list[EncodedExample]:
    """Batched ``encode_example`` over (instruction, input, output) rows (one tokenizer call)."""
    segs = [_segments(ins, inp, out) for ins, inp, out in rows]
    texts = ["".join(s) for s in segs]
    fast = getattr(tokenizer, "is_fast", False)
    enc = tokenizer(texts, add_special_tokens=True, return_special_tokens_mask=True,
                    return_offsets_mapping=fast)
    eos = tokenizer.eos_token_id
    out = []
    for i, (ins, inp, response) in enumerate(rows):
        ids, special = enc["input_ids"][i], enc["special_tokens_mask"][i]
        lead = 0
        while lead < len(ids) and special[lead]:
            lead += 1
        trail = len(ids)
        while trail > lead and special[trail - 1]:
            trail -= 1  # a default trailing EOS is dropped: we place EOS ourselves, after responses only
        body = ids[lead:trail]
        seg = segs[i]
        cuts = [len(seg[0]), len(seg[0]) + len(seg[1]), len(seg[0]) + len(seg[1]) + len(seg[2])]
        bounds = _split_by_offsets(enc["offset_mapping"][i][lead:trail], cuts) if fast else None
        if bounds is None:
            pieces = [tokenizer(s, add_special_tokens=False)["input_ids"] if s else [] for s in seg]
            body = [t for p in pieces for t in p]
            bounds = [len(pieces[0]), len(pieces[0]) + len(pieces[1]),
                      len(pieces[0]) + len(pieces[1]) + len(pieces[2])]
        full = list(ids[:lead]) + list(body)
        resp_end = len(full)
        if response is not None and add_eos and eos is not None:
            full.append(eos)
        src = (lead + bounds[0], lead + bounds[1]) if inp else None
        tgt = (lead + bounds[2], resp_end) if response else None
        full = full[:max_length]
        src = src if src is not None and src[1] <= max_length and src[1] > src[0] else None
        tgt = tgt if tgt is not None and tgt[1] <= max_length and tgt[1] > tgt[0] else None
        out.append(EncodedExample(full, min(lead + bounds[2], len(full)), src, tgt))
    return out


# ---------------------------------------------------------------- building instruction rows
def _example_id(*parts: str) -> str:
    import hashlib

    key = "\x1f".join(normalise_text(p) for p in parts)
    return hashlib.blake2b(key.encode("utf-8"), digest_size=12).hexdigest()
