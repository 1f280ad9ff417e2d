"""Greedy decoding with a KV cache that keeps the batch full: the tokens of transformers' greedy ``generate``
without computing rows that have ended or waiting for the longest row of a batch.

``generate`` keeps every row in the forward pass until the last one stops, and a stop-string criterion
there decodes every row's whole continuation at every step. Here a row leaves the batch (its ids, mask,
positions and cache entries) as soon as it ends, waiting prompts are prefilled (the prefix they all share
computed once) and join the running rows (caches left-padded to a common length), and the stop check
decodes a short tail of each row.
Inputs are built as ``generate`` builds them: left padding, position ids that count the unmasked tokens,
EOS kept as the last token. Padding amounts and batch sizes differ from ``generate``'s, so logits can differ
in the last bits of float rounding; the greedy choice differs only where two logits tie to that precision.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

# Tokens before a new stop-string occurrence that the tail window also covers: up to three bytes of a
# character the newest token completes, up to three bytes of a character cut at the window's start, and
# a first token whose leading space a SentencePiece decoder strips
_TAIL_MARGIN = 8
# Cache layers whose keys and values can be left-padded and joined along the batch (a sliding-window layer
# keeps the last ``window - 1`` positions of a sequence of ``cumulative_length``); with any other layer
# type, waiting prompts start only when the running rows have all ended
_JOINABLE_LAYERS = (DynamicLayer, DynamicSlidingWindowLayer)
# A prefix shorter than this is computed with each prompt (a separate forward pass would not pay)
_MIN_SHARED = 8

# Generation-config options under which transformers' greedy decoding is not the plain argmax of the
# logits (each adds a logits processor in ``GenerationMixin._get_logits_processor``), with their neutral values
_NEUTRAL = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "min_length": 0, "min_new_tokens": 0,
            "guidance_scale": 1.0, "remove_invalid_values": False}
_LOGITS_OPTIONS = ("sequence_bias", "bad_words_ids", "forced_bos_token_id", "forced_eos_token_id",
                   "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
                   "watermarking_config", *_NEUTRAL)


def logits_options(generation_config) -> list[str]:
    """The options of a model's generation config that make ``generate``'s greedy choice differ from the argmax."""
    return [name for name in _LOGITS_OPTIONS
            if getattr(generation_config, name, None) not in (None, _NEUTRAL.get(name))]


class StopStrings:
    """Whether rows' generated text contains a stop string, decoding only a tail of each row's tokens.

    An occurrence that was absent a step ago overlaps the newest token's text (decoding changes text only
    near its end), so it starts at most ``longest stop in bytes`` bytes before that token. Every token that
    is not special carries at least one byte (special ones decode to nothing and are passed over), so a
    window of that many non-special tokens, plus a margin, contains it. A hit in the tail is confirmed on
    the whole text, so a row never stops where ``generate``'s whole-text check would not.
    """

    def __init__(self, tokenizer, stops: Sequence[str]):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.special = set(tokenizer.all_special_ids)
        self.window = max((len(s.encode("utf-8")) for s in self.stops), default=0) + _TAIL_MARGIN

    def found(self, rows: Sequence[Sequence[int]]) -> list[bool]:
        """For each row of generated token ids, checked after each of its tokens: does its text now contain a
        stop string? (An occurrence older than the tail window is not seen again.)"""
        if not self.stops or not rows:
            return [False] * len(rows)
        tails = self.tokenizer.batch_decode([self._tail(row) for row in rows], skip_special_tokens=True)
        return [self._contains(tail) and self._contains(self.tokenizer.decode(row, skip_special_tokens=True))
                for row, tail in zip(rows, tails)]

    def _contains(self, text: str) -> bool:
        return any(stop in text for stop in self.stops)

    def _tail(self, row: Sequence[int]) -> list[int]:
        tail: list[int] = []
        for token in reversed(row):
            if token not in self.special:
                tail.append(token)
                if len(tail) == self.window:
                    break
        return tail[::-1]


@dataclass
class _Rows:
    """Rows decoded together: each row's prompt index, newest token (not yet in the cache) and its position,
    the mask of the cached positions (left-padded), and the cache."""

    index: list[int]
    tokens: torch.Tensor  # (rows,)
    positions: torch.Tensor  # (rows,)
    mask: torch.Tensor  # (rows, cached positions)
    cache: DynamicCache

    def select(self, keep: list[int]) -> None:
        if len(keep) < len(self.index):
            at = torch.tensor(keep, device=self.tokens.device)
            self.cache.batch_select_indices(at)
            self.index = [self.index[i] for i in keep]
            self.tokens, self.positions, self.mask = self.tokens[at], self.positions[at], self.mask[at]


def _left_pad(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _join(a: _Rows, b: _Rows) -> _Rows:
    """One batch of both rows' sets, the shorter left-padded to the longer's cached length."""
    length = max(a.mask.shape[1], b.mask.shape[1])
    for la, lb in zip(a.cache.layers, b.cache.layers):
        stored = max(la.keys.shape[-2], lb.keys.shape[-2])
        la.keys = torch.cat([_left_pad(la.keys, stored, -2), _left_pad(lb.keys, stored, -2)])
        la.values = torch.cat([_left_pad(la.values, stored, -2), _left_pad(lb.values, stored, -2)])
        if isinstance(la, DynamicSlidingWindowLayer):
            la.cumulative_length = length
    mask = torch.cat([_left_pad(a.mask, length, 1), _left_pad(b.mask, length, 1)])
    return _Rows(a.index + b.index, torch.cat([a.tokens, b.tokens]), torch.cat([a.positions, b.positions]),
                 mask, a.cache)


def _trim(rows: _Rows) -> None:
    """Drop the leading positions that are padding in every row (left by rows that ended)."""
    length = rows.mask.shape[1]
    cut = int(rows.mask.any(dim=0).int().argmax())
    if cut == 0:
        return
    for layer in rows.cache.layers:
        drop = max(0, cut - (length - layer.keys.shape[-2]))  # a sliding-window layer holds only the last positions
        layer.keys, layer.values = layer.keys[:, :, drop:], layer.values[:, :, drop:]
        if isinstance(layer, DynamicSlidingWindowLayer):
            layer.cumulative_length -= cut
    rows.mask = rows.mask[:, cut:]


class GreedyDecoder:
    """Greedy continuations of many prompts with one model, at most ``batch_size`` rows in the forward pass.

    A row ends at a token in ``eos_ids`` (kept), once its text contains a stop string, or after
    ``max_new_tokens`` tokens. Prompts start longest first; once a quarter of the batch is free, the next
    waiting prompts are prefilled (in runs of similar length, so little is padding) and join the running
    rows. The prefix that every prompt shares (an instruction, few-shot exemplars) is computed once per
    prefill and repeated for each row, the rest of the row after a gap of padding; a model with
    sliding-window layers (which count that gap as positions) computes each prompt whole.
    """

    def __init__(self, model, max_new_tokens: int, eos_ids: Sequence[int] = (), pad_id: int = 0,
                 stops: StopStrings | None = None):
        params = set(inspect.signature(model.forward).parameters)
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.eos = set(eos_ids)
        self.pad_id = pad_id
        self.stops = stops
        self.device = next(model.parameters()).device
        self.cache_key = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5
        self.position_ids = "position_ids" in params
        self.last_only = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        layers = self._new_cache().layers
        self.joinable = all(type(layer) in _JOINABLE_LAYERS for layer in layers)
        self.shareable = all(type(layer) is DynamicLayer for layer in layers)

    @torch.inference_mode()
    def __call__(self, prompts: Sequence[Sequence[int]], batch_size: int,
                 progress: Callable[[int], None] | None = None) -> list[list[int]]:
        """The generated token ids of each prompt, through the token that ended it."""
        waiting = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        shared = self._shared_length(prompts)
        generated: list[list[int]] = [[] for _ in prompts]
        rows: _Rows | None = None
        while waiting or rows is not None:
            free = batch_size - (len(rows.index) if rows is not None else 0)
            if waiting and (rows is None or (self.joinable and free >= max(1, batch_size // 4))):
                started = self._start([waiting.pop(0) for _ in range(min(free, len(waiting)))], prompts, shared)
                started = self._advance(started, generated, progress)
                rows = started if rows is None else rows if started is None else _join(rows, started)
            else:
                rows = self._advance(self._step(rows), generated, progress)
            if rows is not None and self.joinable:
                _trim(rows)
        return generated

    def _shared_length(self, prompts: Sequence[Sequence[int]]) -> int:
        """How many leading tokens all prompts share and are computed once (0: none worth it), leaving each
        prompt at least one token of its own."""
        if not self.shareable or len(prompts) < 2:
            return 0
        first, limit = prompts[0], min(len(p) for p in prompts) - 1
        shared = next((n for n in range(limit) if any(p[n] != first[n] for p in prompts)), limit)
        return shared if shared >= _MIN_SHARED else 0

    def _start(self, index: list[int], prompts: Sequence[Sequence[int]], shared: int) -> _Rows:
        """Prefill prompts (longest first) in runs whose own parts are at least 3/4 of the run's longest."""
        runs: list[list[int]] = []
        for i in index:
            if runs and self.joinable and 4 * (len(prompts[i]) - shared) < 3 * (len(prompts[runs[-1][0]]) - shared):
                runs.append([i])
            elif runs:
                runs[-1].append(i)
            else:
                runs.append([i])
        started = self._prefill(runs[0], prompts, shared)
        for run in runs[1:]:
            started = _join(started, self._prefill(run, prompts, shared))
        return started

    def _prefill(self, index: list[int], prompts: Sequence[Sequence[int]], shared: int) -> _Rows:
        """One forward pass over the prompts' own parts, left-padded, after their shared prefix."""
        cache = self._new_cache()
        if shared:
            prefix = torch.tensor([prompts[index[0]][:shared]], device=self.device)
            self._next_tokens(prefix, torch.ones_like(prefix), torch.arange(shared, device=self.device)[None], cache)
            cache.batch_repeat_interleave(len(index))
        width = max(len(prompts[i]) for i in index) - shared
        ids = torch.full((len(index), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(index), shared + width), dtype=torch.long)
        mask[:, :shared] = 1
        for row, i in enumerate(index):
            own = prompts[i][shared:]
            ids[row, width - len(own):] = torch.tensor(own, dtype=torch.long)
            mask[row, shared + width - len(own):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)[:, shared:]
        tokens = self._next_tokens(ids, mask, positions, cache)
        return _Rows(index, tokens, positions[:, -1] + 1, mask, cache)

    def _new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.model.config.get_text_config(decoder=True))

    def _step(self, rows: _Rows) -> _Rows:
        rows.mask = torch.cat([rows.mask, rows.mask.new_ones((len(rows.index), 1))], dim=1)
        tokens = self._next_tokens(rows.tokens[:, None], rows.mask, rows.positions[:, None], rows.cache)
        rows.tokens, rows.positions = tokens, rows.positions + 1
        return rows

    def _next_tokens(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        """The argmax after each row's last position (``generate`` compares float32 logits and passes no
        mask when nothing is padded)."""
        kwargs = {"input_ids": ids, "attention_mask": None if bool(mask.all()) else mask, self.cache_key: cache,
                  "use_cache": True, **self.last_only}
        if self.position_ids:
            kwargs["position_ids"] = positions
        logits = self.model(**kwargs, return_dict=True).logits[:, -1]
        return logits.to(torch.float32).argmax(dim=-1)

    def _advance(self, rows: _Rows, generated: list[list[int]],
                 progress: Callable[[int], None] | None) -> _Rows | None:
        """Record each row's new token; the rows that ended leave (None when none is left)."""
        for i, token in zip(rows.index, rows.tokens.tolist()):
            generated[i].append(token)
        ended = [len(generated[i]) == self.max_new_tokens or generated[i][-1] in self.eos for i in rows.index]
        if self.stops is not None:
            open_rows = [r for r, e in enumerate(ended) if not e]
            for r, hit in zip(open_rows, self.stops.found([generated[rows.index[r]] for r in open_rows])):
                ended[r] = hit
        if progress is not None and any(ended):
            progress(sum(ended))
        if all(ended):
            return None
        rows.select([r for r, e in enumerate(ended) if not e])
        return rows
