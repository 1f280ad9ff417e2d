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


def get_peft_model(lm: nn.Module, config: Any) -> Any:
    from peft import get_peft_model as wrap

    return wrap(lm, config)


def add_adapters(lm: nn.Module, spec: LoraConfig) -> Any:
    """Put adapters on ``spec.target_modules`` of ``lm`` (in place) and freeze everything else of it.

    Returns the peft wrapper, which ``merged`` needs. A target name that matches no module is an error.
    """
    from peft import LoraConfig as PeftLoraConfig

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


def merged_into(wrapper: Any, base: nn.Module) -> nn.Module:
    """``wrapper``'s trained adapters folded into ``base`` (the same model read again, in float32) rather
    than into the bf16 copy they trained on: the frozen weights stay exactly the checkpoint's."""
    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    fresh = get_peft_model(base, wrapper.peft_config["default"])
    adapters = {k: v.detach().to("cpu", torch.float32) for k, v in get_peft_model_state_dict(wrapper).items()}
    set_peft_model_state_dict(fresh, adapters)
    return fresh.merge_and_unload()
