"""A launched stage's process that fails the way memory runs out outside torch's own error.

``python -m tests.train.memory_fault_worker <call.json>`` under torchrun, by ``MEMORY_FAULT``:
``cublas``: the first forward pass raises cuBLAS's allocation failure as a RuntimeError (as a GPU
handle creation does when memory is gone); ``oom-kill``: the process adds one to the counter file
``OOM_COUNTER`` (the test's stand-in for the kernel's oom_kill count) and is killed with SIGKILL, as
the kernel's OOM killer does; ``kill``: the same kill without the count. Only tests use this.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from alignx.model.alignx_model import AlignXModel
from alignx.train import worker


def forward_fails(self, batch):
    fault = os.environ["MEMORY_FAULT"]
    if fault == "cublas":
        raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
    if fault == "oom-kill":
        counter = Path(os.environ["OOM_COUNTER"])
        counter.write_text(str(int(counter.read_text()) + 1))
    os.kill(os.getpid(), signal.SIGKILL)


AlignXModel.forward = forward_fails

if __name__ == "__main__":
    sys.exit(worker.main(sys.argv[1]))
