"""The AlignX wrapper: any Hugging Face causal LM plus the language-matching head and the stage-1 loss.

One forward pass per batch gives L_lm, and the hidden states of ``align_layer`` (for L_ctr) and of
the last layer (for L_lam) over the spans that collation carries. Only those two layers' states
are kept: the tuple of all layers is dropped as soon as the two are taken.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from alignx.model.losses import (
    LanguageMatchingHead, chunked_lm_loss, contrastive_loss, language_matching_loss, lm_loss, output_head, span_mean,
)

log = logging.getLogger(__name__)

LAM_HEAD_FILE = "lam_head.safetensors"


def num_layers(model: nn.Module) -> int:
    """Number of transformer blocks of a Hugging Face causal LM (from its config)."""
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text_config.num_hidden_layers)


def hidden_size(model: nn.Module) -> int:
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text_config.hidden_size)


def check_align_layer(align_layer: int, n_layers: int) -> None:
    """Raise unless ``align_layer`` indexes a transformer block's output (1..n_layers)."""
    if not 1 <= align_layer <= n_layers:
        raise ValueError(
            f"align_layer={align_layer} is out of range: the model has {n_layers} layers, so align_layer "
            f"must be within 1..{n_layers} (hidden_states index; 0 would be the embeddings)"
        )


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions counted from each row's first real token, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass
class LossParts:
    """The total loss (with its graph) and detached parts for logging."""

    loss: Tensor
    lm: float
    ctr: float
    lam: float
    usable: int  # examples that counted for L_ctr / L_lam

    def as_dict(self) -> dict[str, float]:
        return {"loss": float(self.loss.detach()), "lm": self.lm, "ctr": self.ctr, "lam": self.lam,
                "usable": float(self.usable)}


class AlignXModel(nn.Module):
    """A causal LM trained with ``L_lm + lambda_ctr * L_ctr + lambda_lam * L_lam``.

    With a lambda at 0 its term is still computed for logging, under ``no_grad``, so the control
    arm's curves are comparable while its gradients are those of plain language modelling.

    Every trainable parameter enters every step's loss (distributed data parallel waits for a
    gradient of each one): with ``lambda_lam = 0`` the head is frozen, and a micro-batch without a
    usable pair touches the head with a zero-weighted term.
    """

    def __init__(
        self,
        lm: nn.Module,
        align_layer: int,
        tau: float = 0.1,
        lambda_ctr: float = 0.3,
        lambda_lam: float = 0.4,
        lam_width: int = 128,
        loss_chunk_tokens: int | None = None,
    ):
        super().__init__()
        check_align_layer(align_layer, num_layers(lm))
        self.loss_chunk_tokens = loss_chunk_tokens
        if loss_chunk_tokens:
            output_head(lm)  # refuses a head the chunked loss would not reproduce
        self.lm = lm
        self.align_layer = align_layer
        self.tau = tau
        self.lambda_ctr = lambda_ctr
        self.lambda_lam = lambda_lam
        self.lam_head = LanguageMatchingHead(hidden_size(lm), lam_width)  # float32, also over a bf16 LoRA base
        self.lam_head.requires_grad_(lambda_lam > 0)  # the control's head is only a probe: never trained

    def forward(self, batch: dict[str, Tensor]) -> LossParts:
        """Loss parts for one collated micro-batch (see ``alignx.data.collate.collate``)."""
        out = self.lm(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=position_ids_from_mask(batch["attention_mask"]),
            output_hidden_states=True,
            use_cache=False,
            # the chunked loss makes its own logits from the final states: none here but the last position's
            **({"logits_to_keep": 1} if self.loss_chunk_tokens else {}),
        )
        align_states, final_states = out.hidden_states[self.align_layer], out.hidden_states[-1]
        logits = None if self.loss_chunk_tokens else out.logits
        del out  # drop the other layers' states right away
        return self.losses_from_states(logits, align_states, final_states, batch)

    def losses_from_states(
        self, logits: Tensor, align_states: Tensor, final_states: Tensor, batch: dict[str, Tensor]
    ) -> LossParts:
        """The three losses from the logits and the two layers' states [B, T, d] of one batch."""
        if logits is None:  # train.loss_chunk_tokens: the logits of a chunk of positions at a time
            weight, softcap = output_head(self.lm)
            l_lm = chunked_lm_loss(final_states, weight, batch["labels"], self.loss_chunk_tokens,
                                   batch.get("lm_denominator"), softcap)
        else:
            l_lm = lm_loss(logits, batch["labels"], batch.get("lm_denominator"))
        ok = batch["span_ok"]
        usable = int(ok.sum())
        src, tgt = batch["src_span"][ok], batch["tgt_span"][ok]
        if usable < len(ok):  # boolean indexing copies: only pay for it when some rows are left out
            align_states, final_states = align_states[ok], final_states[ok]
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.lambda_ctr > 0):
            if usable >= 2:
                hx = span_mean(align_states, src)
                hy = span_mean(align_states, tgt)
                l_ctr = contrastive_loss(hx, hy, self.tau)
            else:
                l_ctr = align_states.sum() * 0.0
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.lambda_lam > 0):
            if usable >= 1:
                ex = span_mean(final_states, src, shift=1)
                ey = span_mean(final_states, tgt, shift=1)
                langs = torch.cat([batch["src_lang"][ok], batch["tgt_lang"][ok]])
                l_lam = language_matching_loss(self.lam_head, torch.cat([ex, ey]), langs)
            else:  # no pair to judge: a zero term that still reaches the head (see the class doc)
                l_lam = final_states.sum() * 0.0 + sum(p.sum() for p in self.lam_head.parameters()) * 0.0
        loss = l_lm
        if self.lambda_ctr > 0:
            loss = loss + self.lambda_ctr * l_ctr
        if self.lambda_lam > 0:
            loss = loss + self.lambda_lam * l_lam
        return LossParts(loss, float(l_lm.detach()), float(l_ctr.detach()), float(l_lam.detach()), usable)

    def save_head(self, directory: Path, state: dict[str, Tensor] | None = None) -> None:
        """Write the language-matching head beside a checkpoint (stage 2 does not load it).

        ``state``: the head's weights when the module's own are sharded (gathered by the loop).
        """
        state = self.lam_head.state_dict() if state is None else state
        tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        save_file(tensors, str(Path(directory) / LAM_HEAD_FILE))

    def load_head(self, directory: Path) -> None:
        self.lam_head.load_state_dict(load_file(str(Path(directory) / LAM_HEAD_FILE)))


class CausalLMObjective(nn.Module):
    """Plain language modelling (bootstrap pre-training, stage-2 SFT) in the loop's objective shape."""

    def __init__(self, lm: nn.Module, loss_chunk_tokens: int | None = None):
        super().__init__()
        self.lm = lm
        self.loss_chunk_tokens = loss_chunk_tokens
        if loss_chunk_tokens:
            output_head(lm)

    def forward(self, batch: dict[str, Tensor]) -> LossParts:
        chunked = {"output_hidden_states": True, "logits_to_keep": 1} if self.loss_chunk_tokens else {}
        out = self.lm(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=position_ids_from_mask(batch["attention_mask"]),
            use_cache=False,
            **chunked,
        )
        if self.loss_chunk_tokens:
            weight, softcap = output_head(self.lm)
            loss = chunked_lm_loss(out.hidden_states[-1], weight, batch["labels"], self.loss_chunk_tokens,
                                   batch.get("lm_denominator"), softcap)
        else:
            loss = lm_loss(out.logits, batch["labels"], batch.get("lm_denominator"))
        return LossParts(loss, float(loss.detach()), 0.0, 0.0, 0)
