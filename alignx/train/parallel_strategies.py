"""How the loop's processes hold the model: replicated (accelerate, DDP) or sharded (FSDP2).

The training loop asks a strategy for the same five things either way: set up model and optimizer,
run one micro-batch forward and backward, take an optimizer step, save or load a checkpoint, and hand
over the trained weights. ``Replicated`` is accelerate's data parallelism (every process holds the
whole model). ``Sharded`` applies ``torch.distributed.fsdp.fully_shard`` to each decoder layer and
then to the whole objective, so each process holds 1/world of parameters, gradients and optimizer
state; its checkpoints go through ``torch.distributed.checkpoint`` and the final weights are gathered
to rank 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from alignx.train.checkpoint import (
    Resumed, load_checkpoint, load_sharded_checkpoint, save_checkpoint, save_sharded_checkpoint,
)

log = logging.getLogger(__name__)
OptimizerFactory = Callable[[list[nn.Parameter]], tuple[torch.optim.Optimizer, Any]]


def _as_float(norm) -> float:
    """A gradient norm as a float (a sharded model's is a DTensor: its full value)."""
    norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
    return float(norm)


def decoder_layers(lm: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a transformers causal LM (Llama, Qwen3, Gemma 3: ``lm.model.layers``)."""
    inner = getattr(lm, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(lm).__name__}: no decoder layers at .model.layers to shard one by one")
    return layers


class Replicated:
    """Every process holds the whole model; accelerate averages gradients (DDP) and scales fp16 losses."""

    def __init__(self, accelerator: Accelerator):
        self.accelerator = accelerator
        self.model: nn.Module | None = None
        self.grad_norm: float | None = None  # the last optimizer step's gradient norm, before clipping
        self.checkpoints_last_step = False  # whether the loop checkpoints the final step too

    def setup(self, objective: nn.Module, make_optimizer: OptimizerFactory) -> tuple[torch.optim.Optimizer, Any]:
        optimizer, scheduler = make_optimizer([p for p in objective.parameters() if p.requires_grad])
        self.model, self.optimizer = self.accelerator.prepare(objective, optimizer)
        self.scheduler = scheduler
        return self.optimizer, scheduler

    def forward_backward(self, batch: dict[str, torch.Tensor], last: bool, grad_clip: float):
        """One micro-batch; on the last of an accumulation round (``last``; accelerate counts them here)
        the optimizer steps."""
        acc = self.accelerator
        with acc.accumulate(self.model):
            with acc.autocast():
                out = self.model(batch)
            acc.backward(out.loss)
            if acc.sync_gradients:  # the norm is logged; clipping at inf only measures it
                self.grad_norm = _as_float(acc.clip_grad_norm_(self.model.parameters(),
                                                               grad_clip if grad_clip > 0 else float("inf")))
            self.optimizer.step()
            self.optimizer.zero_grad()
        return out

    def save(self, work_dir: Path, run_key: str, step: int) -> None:
        acc = self.accelerator
        if acc.is_main_process:  # one writer; every process resumes from it
            save_checkpoint(work_dir, run_key, step, acc.unwrap_model(self.model), self.optimizer, self.scheduler,
                            scaler=acc.scaler)
        acc.wait_for_everyone()

    def load(self, work_dir: Path, run_key: str) -> Resumed | None:
        acc = self.accelerator
        return load_checkpoint(work_dir, run_key, acc.unwrap_model(self.model), self.optimizer, self.scheduler,
                               scaler=acc.scaler)

    def full_state(self) -> dict[str, torch.Tensor] | None:
        """The trained weights live in the caller's modules: nothing to gather."""
        return None


class Sharded(Replicated):
    """FSDP2: parameters, gradients and optimizer state sharded over the processes.

    bf16 compute with fp32 gradient reduction when the run is in bf16 (GPUs); float32 on the CPU.
    With one process nothing is sharded, but checkpoints keep the sharded format, so a run can resume
    on another number of processes (``torch.distributed.checkpoint`` reshards on load).
    """

    def __init__(self, accelerator: Accelerator, mixed_precision: str, grad_sync: str = "step"):
        super().__init__(accelerator)
        self.mixed_precision = mixed_precision
        self.grad_sync = grad_sync
        self.distributed = accelerator.num_processes > 1
        self.checkpoints_last_step = self.distributed  # the gather of the weights follows the last step

    def setup(self, objective: nn.Module, make_optimizer: OptimizerFactory) -> tuple[torch.optim.Optimizer, Any]:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        device = self.accelerator.device
        if self.distributed:
            policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
                      if self.mixed_precision == "bf16" else MixedPrecisionPolicy())
            mesh = device_mesh(device.type, self.accelerator.num_processes)
            main = self.accelerator.is_main_process
            # the main process's weights, by reference (no copy): the only full copy of the group
            full = dict(objective.state_dict()) if main else {}
            buffers = {name: b for name, b in objective.named_buffers()} if main else {}
            for layer in decoder_layers(objective.lm):
                fully_shard(layer, mesh=mesh, mp_policy=policy)
            fully_shard(objective, mesh=mesh, mp_policy=policy)  # embeddings, final norm, lm head, L_lam head
            load_from_main(objective, full, buffers, device)
            del full, buffers
        else:
            objective.to(device)
        self.model = objective
        self.optimizer, self.scheduler = make_optimizer([p for p in objective.parameters() if p.requires_grad])
        self._accum = self.accelerator.gradient_accumulation_steps
        return self.optimizer, self.scheduler

    def forward_backward(self, batch: dict[str, torch.Tensor], last: bool, grad_clip: float):
        if self.distributed:
            # reduce-scatter once per optimizer step, or after every micro-batch (train.grad_sync)
            self.model.set_requires_gradient_sync(last or self.grad_sync == "micro_batch")
        if self.distributed or self.mixed_precision == "no":
            out = self.model(batch)  # the policy casts parameters; no autocast
        else:
            with self.accelerator.autocast():
                out = self.model(batch)
        (out.loss / self._accum).backward()
        if last:
            self.grad_norm = _as_float(torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.grad is not None], grad_clip if grad_clip > 0 else float("inf")))
            self.optimizer.step()
            self.optimizer.zero_grad()
        return out

    def save(self, work_dir: Path, run_key: str, step: int) -> None:
        save_sharded_checkpoint(work_dir, run_key, step, self.model, self.optimizer, self.scheduler)

    def load(self, work_dir: Path, run_key: str) -> Resumed | None:
        return load_sharded_checkpoint(work_dir, run_key, self.model, self.optimizer, self.scheduler)

    def full_state(self) -> dict[str, torch.Tensor] | None:
        """Every process joins the gather; rank 0 gets the objective's full state dict (on the CPU)."""
        if not self.distributed:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return state if self.accelerator.is_main_process else None


def device_mesh(device_type: str, world: int):
    """The processes as FSDP sees them: one dimension on one node; on several nodes (``launch.nodes``)
    two, nodes x processes per node, so parameters are sharded within a node and replicated across
    nodes (HSDP: the all-gathers stay on the node's fast links, only gradients cross nodes)."""
    import os

    from torch.distributed.device_mesh import init_device_mesh

    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if 0 < local < world and world % local == 0:
        log.info("FSDP mesh: replicate %d (nodes) x shard %d (processes per node)", world // local, local)
        return init_device_mesh(device_type, (world // local, local), mesh_dim_names=("replicate", "shard"))
    log.info("FSDP mesh: shard %d", world)
    return init_device_mesh(device_type, (world,))


def load_from_main(model: nn.Module, full: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                   device: torch.device) -> None:
    """Fill a sharded ``model`` on every process from the main process's full state dict ``full``.

    The other processes built the model on the meta device (``alignx.train.training_stages``): they
    hold no weights until here, so a group loads one model copy (the main process's) plus the shards,
    not one copy per process. Their parameters are allocated, the main process sends each tensor and
    every process keeps its shard (``broadcast_from_rank0``). Buffers outside the state dict (rotary
    frequencies) follow from the main process the same way.
    """
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        model.to_empty(device=device)
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    for name, buf in model.named_buffers():
        if name in buffers:
            buf.copy_(buffers[name].to(buf.device))
        dist.broadcast(buf, src=0)


def sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of a module's state dict under ``prefix`` (``"lm."``), with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
