"""Greedy generation in batches, and MGSM's answer extraction.

Prompts are left-padded and sorted by length so a batch wastes little; a row stops at EOS or at the
first of its stop strings, and the output is cut before that string (lm-eval's ``until``). The default
engine is ``alignx.eval.greedy`` (finished rows leave the batch, waiting prompts join it); ``engine="hf"``
runs transformers' ``generate`` batch by batch. The two give the same tokens.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Literal, get_args

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from alignx.eval.greedy import GreedyDecoder, StopStrings, logits_options
from alignx.eval.loglik import model_max_length
from alignx.eval.process_split import split_gather

log = logging.getLogger(__name__)
Engine = Literal["compact", "hf"]


class _StopStrings(StoppingCriteria):
    """Per-row stop once the generated text contains any of the stop strings."""

    def __init__(self, tokenizer, stops: Sequence[str], prompt_width: int):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], device=input_ids.device)


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """The text before the first occurrence of any stop string."""
    for stop in stops:
        if stop and stop in text:
            text = text.split(stop, 1)[0]
    return text


class GreedyGenerator:
    """Greedy decoding of many prompts with one model, ``batch_size`` prompts at a time.

    ``engine``: "compact" (``alignx.eval.greedy.GreedyDecoder``: finished rows leave the batch, waiting
    prompts join it) or "hf" (transformers' ``generate``, one batch at a time). A model whose generation
    config changes greedy decoding (e.g. a repetition penalty) is decoded by "hf", which applies it.
    """

    def __init__(self, model, tokenizer, batch_size: int = 16, max_new_tokens: int = 64, engine: Engine = "compact"):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.max_length = model_max_length(model, tokenizer)
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if engine not in get_args(Engine):
            raise ValueError(f"unknown generation engine {engine!r}; known: {', '.join(get_args(Engine))}")
        options = logits_options(model.generation_config) if engine == "compact" else []
        if options:
            log.warning("the generation config sets %s: decoding with transformers' generate", ", ".join(options))
        self.engine: Engine = "hf" if options else engine

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of text prompts with the tokenizer's default special tokens (as lm-eval does)."""
        return [self.tokenizer.encode(p) for p in prompts]

    def generate(
        self, prompts: Sequence[Sequence[int]], until: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> list[str]:
        """The greedy continuation of each tokenised prompt, cut at the first stop string (under several
        processes each generates its share)."""
        return split_gather(len(prompts), lambda idx: self._generate_here([prompts[i] for i in idx], until, progress),
                            progress=progress)

    @torch.inference_mode()
    def _generate_here(
        self, prompts: Sequence[Sequence[int]], until: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> list[str]:
        room = max(self.max_length - self.max_new_tokens, 1)
        prompts = [list(p)[-room:] for p in prompts]  # left-truncate, as lm-eval does
        if self.engine == "hf":
            texts = self._generate_hf(prompts, until, progress)
        else:
            # generate(eos_token_id=...) replaces the generation config's EOS ids with the tokenizer's
            eos = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
            stops = StopStrings(self.tokenizer, until)
            decoder = GreedyDecoder(self.model, self.max_new_tokens, eos, self.pad_id, stops)
            texts = self.tokenizer.batch_decode(decoder(prompts, self.batch_size, progress), skip_special_tokens=True)
        return [cut_at_stops(text, until) for text in texts]

    def _generate_hf(
        self, prompts: list[list[int]], until: Sequence[str], progress: Callable[[int], None] | None
    ) -> list[str]:
        """transformers' ``generate`` over left-padded batches of prompts sorted by length."""
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        texts: list[str] = [""] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            width = max(len(prompts[i]) for i in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]):] = 1
            generated = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), do_sample=False,
                max_new_tokens=self.max_new_tokens, pad_token_id=self.pad_id,
                eos_token_id=self.tokenizer.eos_token_id,
                stopping_criteria=StoppingCriteriaList([_StopStrings(self.tokenizer, until, width)]),
            )
            for i, text in zip(batch, self.tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)):
                texts[i] = text
            if progress:
                progress(len(batch))
        return texts


# ---------------------------------------------------------------- MGSM answers
# Tried in order at each position: dot-grouped thousands (1.234.567, two groups or more, so never a
# decimal), comma / no-break-space grouped thousands (2,125 or 2 125), then a plain integer or decimal.
_NUMBER = re.compile(
    r"-?\d{1,3}(?:\.\d{3}){2,}(?!\d)"
    r"|-?\d{1,3}(?:[,\u00a0\u202f]\d{3})+(?:\.\d+)?(?!\d)"
    r"|-?\d+(?:\.\d+)?"
)
_DOT_GROUPS = re.compile(r"-?\d{1,3}(?:\.\d{3}){2,}")


def normalise_number(text: str) -> str | None:
    """Canonical form of one number: thousands separators removed, integral values without decimals."""
    text = text.strip()
    if _DOT_GROUPS.fullmatch(text):
        text = text.replace(".", "")
    text = re.sub(r"[,\u00a0\u202f]", "", text)
    try:
        value = float(text)
    except ValueError:
        return None
    return str(int(value)) if value.is_integer() else repr(value)


def final_number(text: str) -> str | None:
    """The last number in a model's output, normalised (None when there is none)."""
    matches = _NUMBER.findall(text)
    return normalise_number(matches[-1]) if matches else None


def exact_match_number(output: str, gold: str) -> int:
    """1 when the output's final number equals the gold answer (both without thousands separators)."""
    pred = final_number(output)
    return int(pred is not None and pred == normalise_number(gold))
