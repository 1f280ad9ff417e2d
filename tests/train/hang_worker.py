"""A launched stage's process that hangs right after its first sharded checkpoint, for kill tests.

``python -m tests.train.hang_worker <call.json>`` under torchrun: every process saves the checkpoint
with the others, then prints ``HANGING`` and sleeps until it is killed. Only tests use this.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from alignx.train import parallel_strategies, worker

save = parallel_strategies.save_sharded_checkpoint


def save_then_hang(*args: Any, **kwargs: Any) -> None:
    save(*args, **kwargs)
    sys.stdout.write("HANGING\n")  # one write: the two processes' lines share a pipe
    sys.stdout.flush()
    time.sleep(3600)


parallel_strategies.save_sharded_checkpoint = save_then_hang

if __name__ == "__main__":
    sys.exit(worker.main(sys.argv[1]))
