"""Low-rank adapters (peft) for one-GPU users: the base weights stay frozen, only adapters train.

``add_adapters`` injects LoRA layers into the causal LM in place (the training objective keeps using
the same module, so the alignment losses still see its hidden states); ``merged`` folds them back
into ordinary weights, ``W + (alpha / r) * B @ A``, so the stage writes a plain checkpoint that stage 2
and evaluation load like any other.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from alignx.config import LoraConfig


def add_adapters(lm: nn.Module, spec: LoraConfig) -> Any:
    """Put adapters on ``spec.target_modules`` of ``lm`` (in place) and freeze everything else of it.

    Returns the peft wrapper, which ``merged`` needs. A target name that matches no module is an error.
    """
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, module in lm.named_modules() if isinstance(module, nn.Linear)}
    missing = [t for t in spec.target_modules if t not in present]
    if missing:
        raise ValueError(f"lora.target_modules {missing} name no linear layer of {type(lm).__name__} "
                         f"(its linear layers: {', '.join(sorted(present))})")
    config = PeftLoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                            target_modules=list(spec.target_modules), bias="none")
    return get_peft_model(lm, config)


def merged(wrapper: Any) -> nn.Module:
    """The causal LM with its adapters folded into the weights (the adapters are removed)."""
    return wrapper.merge_and_unload()
