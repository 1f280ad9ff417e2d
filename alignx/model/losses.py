"""The stage-1 losses: language modelling, the contrastive loss and the language-matching loss.

Definitions follow DESIGN.md ("The method"); tests compare each with a plain re-computation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alignx.data.collate import IGNORE_INDEX  # labels the collator masks; data never imports model


def target_tokens(labels: Tensor) -> Tensor:
    """How many tokens ``lm_loss`` predicts in ``labels``: positions 1.. whose label is not -100."""
    return (labels[:, 1:] != IGNORE_INDEX).sum()


def lm_loss(logits: Tensor, labels: Tensor, denominator: Tensor | float | None = None) -> Tensor:
    """Next-token cross-entropy summed over the batch's predicted tokens (labels -100 are ignored),
    divided by ``denominator``: by default the batch's own count of them (its mean).

    The training loop passes the global batch's token count per micro-batch instead
    (``alignx.train.loop``), so every token of an optimizer step weighs the same whatever the
    micro-batch and process it falls in: micro-batches of uneven lengths give the gradient of one
    big batch. A batch without any target token (every response cut by the length limit under a
    masked prompt) gives 0 with the graph kept, not NaN.

    The labels are shifted, not the logits: position t predicts token t + 1 and the last position
    nothing (-100). Slicing ``logits[:, :-1]`` would make the flattening copy the whole [B, T, vocab]
    tensor (and its gradient) once more, which doubled the loss's time at a 128k vocabulary on CPU.
    """
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    total = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum",
    )
    if denominator is None:
        denominator = (targets != IGNORE_INDEX).sum().clamp(min=1)
    return total / denominator


def _chunk_ce_sum(hidden: Tensor, weight: Tensor, targets: Tensor, softcap: float | None) -> Tensor:
    logits = F.linear(hidden, weight)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def chunked_lm_loss(hidden: Tensor, weight: Tensor, labels: Tensor, chunk_tokens: int,
                    denominator: Tensor | float | None = None, softcap: float | None = None) -> Tensor:
    """``lm_loss`` from the final hidden states [B, T, d] and the output embedding ``weight`` [V, d],
    ``chunk_tokens`` predicted positions at a time: only positions with a target get logits, and each
    chunk's logits are recomputed in backward (``torch.utils.checkpoint``), so the [B, T, V] float32
    logits of a large vocabulary never exist whole. ``softcap``: Gemma's final logit soft-capping."""
    from torch.utils.checkpoint import checkpoint

    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX).reshape(-1)
    keep = targets != IGNORE_INDEX
    states, targets = hidden.reshape(-1, hidden.size(-1))[keep], targets[keep]
    total = hidden.sum() * 0.0  # keeps the graph (and dtype/device) when there is no target
    for start in range(0, targets.numel(), chunk_tokens):
        end = start + chunk_tokens
        total = total + checkpoint(_chunk_ce_sum, states[start:end], weight, targets[start:end], softcap,
                                   use_reentrant=False)
    if denominator is None:
        denominator = keep.sum().clamp(min=1)
    return total.float() / denominator


def output_head(lm) -> tuple[Tensor, float | None]:
    """The output embedding's weight and the final logit soft-cap of a causal LM, for ``chunked_lm_loss``;
    refuses a head it would compute differently from the model (a bias, a logit scale)."""
    head = lm.get_output_embeddings()
    config = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
    if getattr(head, "bias", None) is not None or getattr(config, "logit_scale", None) not in (None, 1, 1.0):
        raise ValueError(f"train.loss_chunk_tokens: {type(lm).__name__}'s output head has a bias or a logit scale; "
                         "the chunked loss does not reproduce it (leave loss_chunk_tokens unset)")
    return head.weight, getattr(config, "final_logit_softcapping", None)


def span_mean(hidden: Tensor, spans: Tensor, shift: int = 0) -> Tensor:
    """Mean of ``hidden[b, t]`` over ``t`` in ``[start - shift, end - shift)`` for each row's span.

    ``hidden`` is [B, T, D], ``spans`` [B, 2] (start, end) token positions in the padded batch.
    ``shift=1`` averages the states that predict the span's tokens (L_lam's span vectors).
    Spans must be non-empty. A masked matrix product keeps this one kernel, with no Python loop.
    """
    positions = torch.arange(hidden.size(1), device=hidden.device)
    start = (spans[:, 0] - shift).unsqueeze(1)
    end = (spans[:, 1] - shift).unsqueeze(1)
    weights = ((positions >= start) & (positions < end)).to(hidden.dtype)
    weights = weights / weights.sum(dim=1, keepdim=True)
    return torch.bmm(weights.unsqueeze(1), hidden).squeeze(1)


def contrastive_loss(hx: Tensor, hy: Tensor, tau: float) -> Tensor:
    """InfoNCE from sources to targets: ``0.5 * mean_i -log softmax_j(cos(hx_i, hy_j) / tau)[i]``.

    Each source's own target is its positive, the batch's other targets its negatives. The 0.5
    matches the reference, which divides the summed loss by 2B. Zero with fewer than 2 examples.
    """
    if hx.size(0) < 2:
        return hx.sum() * 0.0  # keeps the graph (and dtype/device) without contributing
    sim = F.normalize(hx.float(), dim=-1) @ F.normalize(hy.float(), dim=-1).T / tau
    targets = torch.arange(sim.size(0), device=sim.device)
    return 0.5 * F.cross_entropy(sim, targets)


class LanguageMatchingHead(nn.Module):
    """SwiGLU MLP without biases on a pair of span vectors: ``W_down(silu(W_gate [a; b]) * W_up [a; b])``.

    Inputs are [a; b] of width 2d, output 2 logits (different / same language). The weight layout is
    the plain one ([out, 2d]) so a checkpoint reads as the formula.
    """

    def __init__(self, hidden_size: int, width: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.gate = nn.Linear(2 * hidden_size, width, bias=False)
        self.up = nn.Linear(2 * hidden_size, width, bias=False)
        self.down = nn.Linear(width, 2, bias=False)

    def pair_logits(self, vectors: Tensor) -> Tensor:
        """Logits [N, N, 2] for every ordered pair (i, j) of ``vectors`` [N, d], self-pairs included.

        ``W [E_i; E_j] = W_a E_i + W_b E_j``: each vector is projected once by both halves and the
        results are broadcast-added, never materialising the [N, N, 2d] concatenation.
        """
        d = self.hidden_size
        vectors = vectors.to(self.gate.weight.dtype)
        gate_a, gate_b = F.linear(vectors, self.gate.weight[:, :d]), F.linear(vectors, self.gate.weight[:, d:])
        up_a, up_b = F.linear(vectors, self.up.weight[:, :d]), F.linear(vectors, self.up.weight[:, d:])
        gate = gate_a.unsqueeze(1) + gate_b.unsqueeze(0)
        up = up_a.unsqueeze(1) + up_b.unsqueeze(0)
        return self.down(F.silu(gate) * up)


def language_matching_loss(head: LanguageMatchingHead, vectors: Tensor, langs: Tensor) -> Tensor:
    """Mean cross-entropy over all ordered pairs of ``vectors`` [N, d] (self-pairs included).

    The target of pair (i, j) is 1 when ``langs[i] == langs[j]``, else 0. In stage 1 the vectors are
    E = [ex_1..ex_B, ey_1..ey_B] with their language ids.
    """
    logits = head.pair_logits(vectors).float()
    targets = (langs.unsqueeze(1) == langs.unsqueeze(0)).long()
    return F.cross_entropy(logits.reshape(-1, 2), targets.reshape(-1))
