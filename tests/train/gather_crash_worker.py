"""A launched stage's process whose gather of the final weights fails, as a timed-out collective would.

``python -m tests.train.gather_crash_worker <call.json>`` under torchrun: training runs to its last
step, then every process raises where the group gathers the weights for the output. Only tests use this.
"""

from __future__ import annotations

import sys

from alignx.train import worker
from alignx.train.parallel_strategies import Sharded


def gather_fails(self):
    raise RuntimeError("the gather of the final weights timed out (simulated)")


Sharded.full_state = gather_fails

if __name__ == "__main__":
    sys.exit(worker.main(sys.argv[1]))
