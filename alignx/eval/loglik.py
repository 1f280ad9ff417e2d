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


def encode_requests(tokenizer, requests: Sequence[Request]) -> list[EncodedRequest]:
    """Token ids of each request's context and continuation, split the way lm-eval splits them.

    Strings are encoded with the tokenizer's default special tokens (``tokenizer.encode(text)``),
    except a string that already starts with the prefix token's text (lm-eval's ``tok_encode``) and
    the continuation of an empty context. Each distinct string is encoded once, in one batched call
    per special-token setting (the same ids as one call per string).
    """
    prefix = prefix_token_id(tokenizer)
    prefix_text = tokenizer.decode(prefix)
    tables: dict[bool, dict[str, list[int] | None]] = {True: {}, False: {}}  # add_special_tokens -> ids

    def key(text: str, special: bool = True) -> tuple[bool, str]:
        special = special and not (prefix_text and text.startswith(prefix_text))
        tables[special][text] = None
        return special, text

    plan = []
    for context, continuation in requests:
        if context == "":
            plan.append((None, key(continuation, special=False), context, continuation))
            continue
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:  # trailing spaces of the context belong to the continuation
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        plan.append((key(context), key(context + continuation), context, continuation))
    for special, table in tables.items():
        texts = list(table)
        if texts:
            table.update(zip(texts, tokenizer(texts, add_special_tokens=special)["input_ids"]))
    out = []
    for ctx_key, whole_key, context, continuation in plan:
        whole = list(tables[whole_key[0]][whole_key[1]])
        if ctx_key is None:  # empty context: the prefix token, unless the continuation starts with it
            ctx, cont = ([prefix], whole) if not whole or whole[0] != prefix else (whole[:1], whole[1:])
        else:
            ctx = list(tables[ctx_key[0]][ctx_key[1]])
            cont = whole[len(ctx):]
        if not cont:
            raise EmptyContinuationError(f"continuation {continuation!r} has no tokens after context {context!r}")
        out.append(EncodedRequest(tuple(ctx), tuple(cont)))
    return out


def encode_request(tokenizer, context: str, continuation: str) -> EncodedRequest:
    """``encode_requests`` for a single request."""
    return encode_requests(tokenizer, [(context, continuation)])[0]


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
        return self.score_encoded(encode_requests(self.tokenizer, requests), progress)

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
        """Requests grouped by context, at most ``batch_size`` continuations per batch (a larger group
        gets a batch of its own). Groups are ordered by their longest continuation, then context:
        padding of the continuations, which outnumber the contexts, costs the most."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in indices:
            groups.setdefault(encoded[i].context, []).append(i)
        ordered = sorted(groups.values(), key=lambda g: (-max(len(encoded[i].continuation) for i in g), -len(encoded[g[0]].context)))
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
        ids, mask = _right_padded(inputs, width, self.pad_id)
        logits = self.model(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device), logits_to_keep=width - first
        ).logits
        # row r's continuation is predicted at kept positions [len(x) - len(cont) - first, len(x) - first)
        offsets = [len(x) - len(c) - first for x, c in zip(inputs, conts)]
        return _gather_scores(logits, conts, offsets)

    # ------------------------------------------------------------ shared contexts through the KV cache
    def _score_shared(self, batch: Sequence[EncodedRequest]) -> list[Score]:
        """One forward pass per distinct context, then every continuation on the context's cache."""
        contexts = list(dict.fromkeys(r.context for r in batch))
        group_of = {ctx: g for g, ctx in enumerate(contexts)}
        width = max(len(c) for c in contexts)
        ids, ctx_mask = _right_padded(contexts, width, self.pad_id)
        # only the contexts' last positions go through the vocabulary projection
        ends = sorted({len(c) - 1 for c in contexts})
        out = self.model(
            input_ids=ids.to(self.device), attention_mask=ctx_mask.to(self.device), use_cache=True,
            logits_to_keep=torch.tensor(ends, device=self.device),
        )
        # the distribution of each continuation's first token: at its context's last position
        last = torch.stack([out.logits[g, ends.index(len(ctx) - 1)] for g, ctx in enumerate(contexts)])
        rows = [group_of[r.context] for r in batch]
        head = _gather_scores(last[rows].unsqueeze(1), [r.continuation[:1] for r in batch], [0] * len(batch))
        rest = [k for k, r in enumerate(batch) if len(r.continuation) > 1]
        if not rest:
            return head
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        cache.reorder_cache(torch.tensor([rows[k] for k in rest], device=self.device))
        tails = [batch[k].continuation[:-1] for k in rest]
        tail_width = max(len(t) for t in tails)
        tail_ids, tail_mask = _right_padded(tails, tail_width, self.pad_id)
        ctx_lens = torch.tensor([len(batch[k].context) for k in rest])
        positions = ctx_lens[:, None] + torch.arange(tail_width)[None, :]
        mask = torch.cat([ctx_mask[[rows[k] for k in rest]], tail_mask], dim=1)
        logits = self.model(
            input_ids=tail_ids.to(self.device), attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device), use_cache=True, **{self._cache_arg: cache},
        ).logits
        tail = _gather_scores(logits, [batch[k].continuation[1:] for k in rest], [0] * len(rest))
        scores = list(head)
        for (lp, greedy), k in zip(tail, rest):
            scores[k] = (head[k][0] + lp, head[k][1] and greedy)
        return scores


def _right_padded(rows: Sequence[Sequence[int]], width: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, :len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[r, :len(row)] = 1
    return ids, mask


def _gather_scores(logits: torch.Tensor, targets: Sequence[Sequence[int]], offsets: Sequence[int]) -> list[Score]:
    """Summed log-probability of each row's ``targets`` under ``logits[row, offset:offset+len]`` and
    whether they are the greedy tokens.

    A token is greedy when its logit is the maximum (argmax over the vocabulary is the slowest
    reduction torch has on CPU; an exact float32 tie, where argmax would pick the lower id, is
    vanishingly rare, and no metric here reads the flag).
    """
    logits = logits.float()
    n, width = logits.shape[:2]
    index = torch.zeros((n, width), dtype=torch.long)
    valid = torch.zeros((n, width), dtype=torch.bool)
    for r, (tgt, off) in enumerate(zip(targets, offsets)):
        index[r, off:off + len(tgt)] = torch.tensor(list(tgt), dtype=torch.long)
        valid[r, off:off + len(tgt)] = True
    index, valid = index.to(logits.device), valid.to(logits.device)
    chosen = logits.gather(2, index[..., None]).squeeze(-1)
    picked = torch.log_softmax(logits, dim=-1).gather(2, index[..., None]).squeeze(-1).masked_fill(~valid, 0.0)
    greedy = (chosen >= logits.amax(dim=-1)) | ~valid
    return list(zip(picked.sum(dim=1).tolist(), greedy.all(dim=1).tolist()))
