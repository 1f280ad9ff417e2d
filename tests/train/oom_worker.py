"""A launched stage's process that runs out of memory unless activation checkpointing is on.

``python -m tests.train.oom_worker <call.json>`` under torchrun: the first forward pass of a model
without activation checkpointing raises torch's OutOfMemoryError, as a too-large micro-batch would on
a GPU. Only tests use this.
"""

from __future__ import annotations

import sys

import torch

from alignx.model.alignx_model import AlignXModel
from alignx.train import worker

forward = AlignXModel.forward


def forward_or_oom(self, batch):
    if not self.lm.is_activation_checkpointing:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
    return forward(self, batch)


AlignXModel.forward = forward_or_oom

if __name__ == "__main__":
    sys.exit(worker.main(sys.argv[1]))
