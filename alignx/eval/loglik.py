"""Log-likelihood scoring of (context, continuation) requests, equal to lm-evaluation-harness 0.4's.

Tokenisation follows lm-eval's ``_encode_pair``: context + continuation are encoded whole and the
continuation's tokens are those after the context's own encoding (trailing context spaces move to the
continuation first); an empty context becomes the BOS (else EOS) token.

Scoring is batched. Requests that share a context (the choices of one item) are packed into one row:
the context once, then every continuation, with a tree-shaped attention mask (each continuation sees
the context and its own earlier tokens, never a sibling) and position ids that restart after the
context, so each continuation is computed exactly as if it followed the context alone. Only the
positions that predict continuation tokens go through the vocabulary projection. A model that does
not honour custom 4D masks is caught by a self-check and scored one sequence per request instead.
Sliding-window attention (Gemma 2/3, Mistral) ignores a custom 4D mask's distances, so a packed row
longer than the window is scored one sequence per request too (the self-check sees only one batch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from alignx.eval.process_split import split_gather

log = logging.getLogger(__name__)

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


def sliding_window(model) -> int | None:
    """The attention window of a model with sliding-window layers (None: every layer attends fully)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        return None  # e.g. Qwen with use_sliding_window off: the window is configured but unused
    return int(window) if window else None


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
    """Scores requests with a causal LM; ``share_context`` packs the requests of a shared context into one row."""

    def __init__(self, model, tokenizer, batch_size: int = 16, share_context: bool = True, max_length: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.share_context = share_context
        self.max_length = max_length or model_max_length(model, tokenizer)
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.window = sliding_window(model)
        self._checked = False  # the packed layout is verified against plain sequences once

    def score(self, requests: Sequence[Request], progress: Callable[[int], None] | None = None) -> list[Score]:
        """(log-probability, is_greedy) of each request's continuation given its context, in input order."""
        return self.score_encoded(encode_requests(self.tokenizer, requests), progress)

    def score_encoded(self, encoded: Sequence[EncodedRequest], progress: Callable[[int], None] | None = None) -> list[Score]:
        """``score`` for requests already tokenised; ``progress(n)`` after every n requests scored.

        Under several processes each scores its share (requests of one context stay together).
        """
        contexts: dict[tuple[int, ...], int] = {}
        owner = [contexts.setdefault(r.context, len(contexts)) for r in encoded]
        return split_gather(len(encoded), lambda idx: self._score_here([encoded[i] for i in idx], progress), owner,
                            progress)

    @torch.inference_mode()
    def _score_here(self, encoded: Sequence[EncodedRequest], progress: Callable[[int], None] | None = None) -> list[Score]:
        too_big = [i for i, r in enumerate(encoded) if len(r.continuation) > self.max_length]
        if too_big:
            raise ValueError(f"request {too_big[0]}: a continuation of {len(encoded[too_big[0]].continuation)} tokens "
                             f"does not fit the model's {self.max_length}-token window")
        results: list[Score | None] = [None] * len(encoded)
        fits = [i for i, r in enumerate(encoded) if len(r.context) + len(r.continuation) <= self.max_length + 1]
        too_long = sorted(set(range(len(encoded))) - set(fits))
        for i in too_long:  # lm-eval truncates these from the left, one sequence at a time here
            results[i] = self._score_full([encoded[i]])[0]
            if progress:
                progress(1)
        if self.share_context:
            batches = self._context_batches(encoded, fits)
            scorer = self._score_packed
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
        """Requests grouped by context (groups kept whole), at most ``batch_size`` requests per batch
        unless one group is larger; groups ordered by packed row length so rows of a batch are alike."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in indices:
            groups.setdefault(encoded[i].context, []).append(i)

        def row_length(group: list[int]) -> int:
            return len(encoded[group[0]].context) + sum(len(encoded[i].continuation) - 1 for i in group)

        batches, current = [], []
        for group in sorted(groups.values(), key=lambda g: -row_length(g)):
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
        picks = [(r, range(len(x) - len(c) - first, len(x) - first), c) for r, (x, c) in enumerate(zip(inputs, conts))]
        return _score_positions(logits, picks)

    # ------------------------------------------------------------ shared contexts packed into one row
    def _score_packed(self, batch: Sequence[EncodedRequest]) -> list[Score]:
        """One row per distinct context: the context, then every continuation but its last token."""
        if self.window is not None and _packed_width(batch) > self.window:
            return self._score_full(batch)  # a 4D mask would let tokens see past the window
        if not self._checked:
            self._checked = True
            probe = [r for r in batch if r.context == batch[0].context]
            packed, plain = self._packed(probe), self._score_full(probe)
            if max(abs(a[0] - b[0]) for a, b in zip(packed, plain)) > 1e-3:
                log.warning("%s does not honour custom 4D attention masks; scoring one sequence per request",
                            type(self.model).__name__)
                self.share_context = False
        return self._packed(batch) if self.share_context else self._score_full(batch)

    def _packed(self, batch: Sequence[EncodedRequest]) -> list[Score]:
        contexts = list(dict.fromkeys(r.context for r in batch))
        members = {ctx: [k for k, r in enumerate(batch) if r.context == ctx] for ctx in contexts}
        rows, where = [], {}  # where[k] = (row, positions in the row that predict request k's tokens)
        for row, ctx in enumerate(contexts):
            ids, pos, seg = list(ctx), list(range(len(ctx))), [-1] * len(ctx)
            for k in members[ctx]:
                tail = batch[k].continuation[:-1]
                where[k] = (row, [len(ctx) - 1, *range(len(ids), len(ids) + len(tail))])
                ids += tail
                pos += range(len(ctx), len(ctx) + len(tail))
                seg += [k] * len(tail)
            rows.append((ids, pos, seg))
        width = max(len(ids) for ids, _, _ in rows)
        ids, valid = _right_padded([r[0] for r in rows], width, self.pad_id)
        positions, _ = _right_padded([r[1] for r in rows], width, 0)
        segments, _ = _right_padded([r[2] for r in rows], width, -2)
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        # a token sees earlier tokens of its own segment and the whole context (segment -1)
        visible = (segments[:, :, None] == segments[:, None, :]) | (segments[:, None, :] == -1)
        mask = causal[None] & visible & valid.bool()[:, None, :]
        mask |= torch.eye(width, dtype=torch.bool)[None]  # padding rows see themselves: no empty softmax
        first = min(len(c) for c in contexts) - 1  # earliest position any request needs
        logits = self.model(
            input_ids=ids.to(self.device), attention_mask=mask[:, None].to(self.device),
            position_ids=positions.to(self.device), logits_to_keep=width - first,
        ).logits
        picks = [(where[k][0], [p - first for p in where[k][1]], batch[k].continuation) for k in range(len(batch))]
        return _score_positions(logits, picks)


def _packed_width(batch: Sequence[EncodedRequest]) -> int:
    """The longest row ``_packed`` builds for ``batch``: a context and all its continuations but their last tokens."""
    rows: dict[tuple[int, ...], int] = {}
    for r in batch:
        rows[r.context] = rows.get(r.context, len(r.context)) + len(r.continuation) - 1
    return max(rows.values())


def _right_padded(rows: Sequence[Sequence[int]], width: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, :len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[r, :len(row)] = 1
    return ids, mask


def _score_positions(logits: torch.Tensor, picks: Sequence[tuple[int, Sequence[int], Sequence[int]]]) -> list[Score]:
    """For each (row, positions, tokens): the summed log-probability of ``tokens`` at those positions of
    ``logits`` [rows, positions, vocab], and whether every one is the greedy token.

    A token is greedy when its logit is the maximum (argmax over the vocabulary is the slowest
    reduction torch has on CPU; an exact float32 tie, where argmax would pick the lower id, is
    vanishingly rare, and no metric here reads the flag).
    """
    device = logits.device
    rows = torch.tensor([r for r, pos, _ in picks for _ in pos], device=device)
    cols = torch.tensor([c for _, pos, _ in picks for c in pos], device=device)
    toks = torch.tensor([t for _, _, tokens in picks for t in tokens], device=device)[:, None]
    owner = torch.tensor([k for k, (_, pos, _) in enumerate(picks) for _ in pos], device=device)
    needed = logits[rows, cols].float()  # [tokens, vocab]: only the positions that predict a token
    logprobs = torch.log_softmax(needed, dim=-1).gather(1, toks).squeeze(1)
    missed = (needed.gather(1, toks).squeeze(1) < needed.amax(dim=-1)).float()
    sums = torch.zeros(len(picks), device=device).index_add_(0, owner, logprobs)
    misses = torch.zeros(len(picks), device=device).index_add_(0, owner, missed)
    return list(zip(sums.tolist(), (misses == 0).tolist()))
