"""Run the ``alignx`` command with one library call made to hang at a chosen point, for kill tests.

``python -m tests.flows.hang <point> <alignx args...>``: the process prints ``HANGING`` on stdout
once it is inside the chosen stage (holding that stage's lock, with its temporary output on disk),
then sleeps until it is killed. Only tests use this; the library has no hooks for it.
"""

from __future__ import annotations

import sys
import time
from typing import Any


def _hang() -> None:
    print("HANGING", flush=True)
    time.sleep(3600)


def install(point: str) -> None:
    if point == "shard":
        from alignx.data import data_stages

        write = data_stages.write_shard_set

        def write_then_hang(*args: Any, **kwargs: Any) -> Any:
            write(*args, **kwargs)  # the shards are in the temporary folder, not yet renamed
            _hang()

        data_stages.write_shard_set = write_then_hang
    elif point == "stage1-checkpoint":
        from alignx.train import parallel_strategies

        save = parallel_strategies.save_checkpoint

        def save_then_hang(*args: Any, **kwargs: Any) -> Any:
            result = save(*args, **kwargs)
            _hang()
            return result

        parallel_strategies.save_checkpoint = save_then_hang
    elif point == "evaluate":
        from alignx.eval import runner

        run_alignment = runner._run_alignment

        def hang_in_alignment(*args: Any, **kwargs: Any) -> Any:
            _hang()
            return run_alignment(*args, **kwargs)

        runner._run_alignment = hang_in_alignment
    else:
        raise SystemExit(f"unknown hang point {point!r}")


if __name__ == "__main__":
    install(sys.argv[1])
    from flows.cli import main

    sys.exit(main(sys.argv[2:]))
