"""The training sections of the configuration: one run of the shared loop, its adapters and its launch.

Part of ``alignx.config`` (which re-exports them): defaults and validators that read the section alone.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from alignx.config_section import Section


class LoraConfig(Section):
    """Low-rank adapters (peft) on the decoder's linear layers: the base weights stay frozen.

    The alignment losses still act on the hidden states and stage 1's language-matching head still
    trains; the adapters are merged into the weights when the stage writes its model.
    """

    r: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class TrainConfig(Section):
    """One training run of the shared loop (bootstrap, stage 1 or stage 2)."""

    steps: int | None = Field(None, ge=1)  # optimizer steps; None -> epochs
    epochs: float = Field(1.0, gt=0)
    micro_batch_size: int = Field(8, ge=1)  # per device; also the contrastive batch
    grad_accum: int = Field(1, ge=1)  # used when global_batch_size is None
    # examples per optimizer step over every process: accumulation = global / (micro x world size), so
    # 1 GPU and 8 GPUs train the same trajectory; None: micro x grad_accum x world size
    global_batch_size: int | None = Field(None, ge=1)
    lr: float = Field(2e-6, gt=0)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    max_length: int = Field(512, ge=8)  # cutoff in tokens
    padding_side: Literal["left", "right"] = "left"
    group_by_length: bool = True
    mask_prompt: bool = False  # exclude prompt tokens from L_lm
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    gradient_checkpointing: bool = False
    # "fsdp": FSDP2 (fully_shard per decoder layer) when several processes train; bf16 parameters with
    # fp32 gradient reduction on GPUs; checkpoints through torch.distributed.checkpoint (a resume on
    # another world size reshards). "none": every process holds the whole model (DDP).
    sharding: Literal["none", "fsdp"] = "none"
    # Under FSDP with gradient accumulation: "step" reduce-scatters once per optimizer step and keeps
    # every unsharded gradient, in fp32, between micro-batches (least communication, most memory);
    # "micro_batch" reduce-scatters after each micro-batch, so gradients stay sharded (as torchtitan).
    # The trajectory is the same either way; `alignx plan` counts the one configured.
    grad_sync: Literal["step", "micro_batch"] = "step"
    # The next-token loss over this many predicted positions at a time, each chunk's logits recomputed
    # in backward: the float32 logits of a large vocabulary (16 x 512 x 128k: 4 GiB, and as much again
    # for their gradient) never exist whole. None: the whole micro-batch at once.
    loss_chunk_tokens: int | None = Field(None, ge=1)
    lora: LoraConfig | None = None  # None: full fine-tuning
    checkpoint_every: int = Field(100, ge=1)
    log_every: int = Field(10, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _global_batch_divides(self) -> "TrainConfig":
        if self.global_batch_size is not None and self.global_batch_size % self.micro_batch_size:
            raise ValueError(f"global_batch_size={self.global_batch_size} is not a multiple of micro_batch_size="
                             f"{self.micro_batch_size} (accumulation = global / (micro x processes))")
        return self

    @model_validator(mode="after")
    def _check_sharding(self) -> "TrainConfig":
        if self.sharding == "fsdp" and self.mixed_precision == "fp16":
            raise ValueError("sharding 'fsdp' trains in bf16 or float32: set mixed_precision to bf16, no or auto "
                             "(fp16 needs a gradient scaler over sharded gradients, which the sharded path does not keep)")
        if self.sharding == "fsdp" and self.lora is not None:
            raise ValueError("lora is for one GPU (or replicated processes): leave sharding 'none' with lora")
        return self


class LaunchConfig(Section):
    """How a training stage runs: in the task's own process, or as a fresh process group.

    ``processes`` 1 trains in the calling process (the default; what a machine without GPUs wants);
    N > 1 or "gpus" (one per visible GPU) starts ``torchrun`` with that many processes (NCCL on GPUs,
    gloo on the CPU), whose log lines and progress stream into the task's.
    """

    processes: Annotated[int, Field(ge=1)] | Literal["gpus"] = 1
    # how long a collective waits for the slowest process before the group fails (NCCL's own default
    # is 10 minutes): the gather of the final weights and the first checkpoint of a large model on a
    # slow file system take longer than a training step
    timeout_minutes: float = Field(30.0, gt=0)
    # A launched group takes every GPU (or, on the CPU, every core) of its machine: a stage that would
    # launch one while another stage holds this lock file waits for it. The file is per machine
    # (local /tmp), shared by every worker and flow run on it; "" turns the lock off.
    host_lock: str = "/tmp/alignx-launch.lock"
    # Several machines: ``nodes`` > 1 starts this machine's torchrun agent as one of ``nodes`` that meet
    # at a c10d rendezvous on ``rdzv_endpoint`` (host:port of a machine every node reaches; the first
    # node's, by convention). The other nodes join with `alignx join <call file>` (the task prints the
    # command; the call file is written under the run root, which every node must share). The group's
    # rendezvous id is the stage's output name unless ``rdzv_id`` sets one. Under FSDP the mesh is two-
    # dimensional (HSDP): weights sharded within a node, replicated across nodes.
    nodes: int = Field(1, ge=1)
    rdzv_endpoint: str = ""
    rdzv_id: str = ""

    @model_validator(mode="after")
    def _check_nodes(self) -> "LaunchConfig":
        if self.nodes > 1 and not self.rdzv_endpoint:
            raise ValueError(f"launch.nodes={self.nodes} needs launch.rdzv_endpoint (host:port where the nodes meet)")
        return self
