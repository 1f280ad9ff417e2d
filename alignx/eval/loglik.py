"""Log-likelihood scoring of (context, continuation) requests, equal to lm-evaluation-harness 0.4's.

Tokenisation follows lm-eval's ``_encode_pair``: context + continuation are encoded whole and the
continuation's tokens are those after the context's own encoding (trailing context spaces move to the
continuation first); an empty context becomes the BOS (else EOS) token. Scoring is batched: requests
that share a context (the choices of one item) get one forward pass over the context, whose key/value
cache then serves every continuation; only the positions that predict continuation tokens go through
the vocabulary projection.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Request = tuple[str, str]
Score = tuple[float, bool]  # (summed log-probability, continuation is the greedy decoding)

_SEQLEN_ATTRS = ("n_positions", "max_position_embeddings", "n_ctx")
_DEFAULT_MAX_LENGTH = 2048


class EmptyContinuationError(ValueError):
    """A continuation that tokenises to nothing in its context, so it has no log-likelihood."""


@dataclass(frozen=True)
class EncodedRequest:
    context: tuple[int, ...]
    continuation: tuple[int, ...]


def prefix_token_id(tokenizer) -> int:
    """The token an empty context becomes: BOS, else EOS (lm-eval's ``prefix_token_id``)."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def tok_encode(tokenizer, text: str) -> list[int]:
    """``tokenizer.encode`` with the tokenizer's default special tokens, unless the text already starts
    with the prefix token's string (lm-eval's ``tok_encode``)."""
    prefix = tokenizer.decode(prefix_token_id(tokenizer))
    if prefix and text.startswith(prefix):
        return tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode(text)


def encode_request(tokenizer, context: str, continuation: str) -> EncodedRequest:
    """Token ids of one request's context and continuation, split the way lm-eval splits them."""
    if context == "":
        cont = tokenizer.encode(continuation, add_special_tokens=False)
        prefix = prefix_token_id(tokenizer)
        ctx, cont = ([prefix], cont) if not cont or cont[0] != prefix else (cont[:1], cont[1:])
    else:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = tok_encode(tokenizer, context + continuation)
        ctx = tok_encode(tokenizer, context)
        cont = whole[len(ctx):]
    if not cont:
        raise EmptyContinuationError(f"continuation {continuation!r} has no tokens after context {context!r}")
    return EncodedRequest(tuple(ctx), tuple(cont))


def model_max_length(model, tokenizer) -> int:
    """The context length lm-eval assumes: the config's, else the tokenizer's, else 2048."""
    config = getattr(model.config, "text_config", None) or model.config
    for attr in _SEQLEN_ATTRS:
        value = getattr(config, attr, None)
        if value:
            return int(value)
    tok_max = getattr(tokenizer, "model_max_length", None)
    if tok_max and tok_max < 1e9:
        return int(tok_max)
    return _DEFAULT_MAX_LENGTH


class LoglikelihoodScorer:
    """Scores requests with a causal LM; ``share_context`` turns on the shared-context KV cache."""

    def __init__(self, model, tokenizer, batch_size: int = 16, share_context: bool = True, max_length: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.share_context = share_context
        self.max_length = max_length or model_max_length(model, tokenizer)
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # transformers 5.2x names the key/value cache argument ``cache``; earlier versions ``past_key_values``
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def score(self, requests: Sequence[Request], progress: Callable[[int], None] | None = None) -> list[Score]:
        """(log-probability, is_greedy) of each request's continuation given its context, in input order."""
        encoded = [encode_request(self.tokenizer, c, x) for c, x in requests]
        return self.score_encoded(encoded, progress)

    @torch.inference_mode()
    def score_encoded(self, encoded: Sequence[EncodedRequest], progress: Callable[[int], None] | None = None) -> list[Score]:
        results: list[Score | None] = [None] * len(encoded)
        fits = [i for i, r in enumerate(encoded) if len(r.context) + len(r.continuation) <= self.max_length + 1]
        too_long = sorted(set(range(len(encoded))) - set(fits))
        for i in too_long:  # lm-eval truncates these from the left, one sequence at a time here
            results[i] = self._score_full([encoded[i]])[0]
            if progress:
                progress(1)
        if self.share_context:
            batches = self._context_batches(encoded, fits)
            scorer = self._score_shared
        else:
            order = sorted(fits, key=lambda i: -(len(encoded[i].context) + len(encoded[i].continuation)))
            batches = [order[k:k + self.batch_size] for k in range(0, len(order), self.batch_size)]
            scorer = self._score_full
        for batch in batches:
            for i, score in zip(batch, scorer([encoded[i] for i in batch])):
                results[i] = score
            if progress:
                progress(len(batch))
        return results  # type: ignore[return-value]

    def _context_batches(self, encoded: Sequence[EncodedRequest], indices: list[int]) -> list[list[int]]:
        """Requests grouped by context, longest first, at most ``batch_size`` continuations per batch
        (a group larger than that gets a batch of its own)."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in indices:
            groups.setdefault(encoded[i].context, []).append(i)
        ordered = sorted(groups.values(), key=lambda g: -max(len(encoded[i].context) + len(encoded[i].continuation) for i in g))
        batches, current = [], []
        for group in ordered:
            if current and len(current) + len(group) > self.batch_size:
                batches.append(current)
                current = []
            current = current + group
        if current:
            batches.append(current)
        return batches

    # ------------------------------------------------------------ one forward pass per sequence
    def _score_full(self, batch: Sequence[EncodedRequest]) -> list[Score]:
        """Each request as one right-padded sequence (lm-eval's own layout)."""
        inputs = [list(r.context + r.continuation)[-(self.max_length + 1):][:-1] for r in batch]
        conts = [list(r.continuation) for r in batch]
        width = max(len(x) for x in inputs)
        first = min(len(x) - len(c) for x, c in zip(inputs, conts))  # earliest position any row needs
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, x in enumerate(inputs):
            ids[row, :len(x)] = torch.tensor(x)
            mask[row, :len(x)] = 1
        logits = self.model(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device), logits_to_keep=width - first
        ).logits
        out = []
        for row, (x, cont) in enumerate(zip(inputs, conts)):
            start = len(x) - len(cont) - first
            out.append(_continuation_score(logits[row, start:start + len(cont)], cont))
        return out

    # ------------------------------------------------------------ shared contexts through the KV cache
    def _score_shared(self, batch: Sequence[EncodedRequest]) -> list[Score]:
        """One forward pass per distinct context, then every continuation on the context's cache."""
        contexts = list(dict.fromkeys(r.context for r in batch))
        group_of = {ctx: g for g, ctx in enumerate(contexts)}
        width = max(len(c) for c in contexts)
        ids = torch.full((len(contexts), width), self.pad_id, dtype=torch.long)
        ctx_mask = torch.zeros((len(contexts), width), dtype=torch.long)
        for g, ctx in enumerate(contexts):
            ids[g, :len(ctx)] = torch.tensor(ctx)
            ctx_mask[g, :len(ctx)] = 1
        keep = width - min(len(c) for c in contexts) + 1
        out = self.model(
            input_ids=ids.to(self.device), attention_mask=ctx_mask.to(self.device), use_cache=True, logits_to_keep=keep
        )
        # the distribution of each continuation's first token: at the context's last position
        last = torch.stack([out.logits[g, len(ctx) - 1 - (width - keep)] for g, ctx in enumerate(contexts)])
        first_scores = [_continuation_score(last[group_of[r.context]].unsqueeze(0), r.continuation[:1]) for r in batch]
        rest = [k for k, r in enumerate(batch) if len(r.continuation) > 1]
        if not rest:
            return first_scores
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        rows = torch.tensor([group_of[batch[k].context] for k in rest], device=self.device)
        cache.reorder_cache(rows)
        tails = [list(batch[k].continuation[:-1]) for k in rest]
        tail_width = max(len(t) for t in tails)
        tail_ids = torch.full((len(rest), tail_width), self.pad_id, dtype=torch.long)
        tail_mask = torch.zeros((len(rest), tail_width), dtype=torch.long)
        for row, tail in enumerate(tails):
            tail_ids[row, :len(tail)] = torch.tensor(tail)
            tail_mask[row, :len(tail)] = 1
        ctx_lens = torch.tensor([len(batch[k].context) for k in rest])
        positions = ctx_lens[:, None] + torch.arange(tail_width)[None, :]
        mask = torch.cat([ctx_mask.to(self.device)[rows], tail_mask.to(self.device)], dim=1)
        logits = self.model(
            input_ids=tail_ids.to(self.device), attention_mask=mask, position_ids=positions.to(self.device),
            use_cache=True, **{self._cache_arg: cache},
        ).logits
        scores = list(first_scores)
        for row, k in enumerate(rest):
            cont = batch[k].continuation
            tail_lp, tail_greedy = _continuation_score(logits[row, :len(cont) - 1], cont[1:])
            head_lp, head_greedy = first_scores[k]
            scores[k] = (head_lp + tail_lp, head_greedy and tail_greedy)
        return scores


def _continuation_score(logits: torch.Tensor, continuation: Sequence[int]) -> Score:
    """Summed log-probability of ``continuation`` under ``logits`` [len, vocab] and whether it is greedy."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    target = torch.tensor(list(continuation), device=logits.device)
    picked = logprobs.gather(1, target[:, None]).squeeze(1)
    return float(picked.sum()), bool((logprobs.argmax(dim=-1) == target).all())
