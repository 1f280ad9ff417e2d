"""A launched stage's process that only holds the machine for a while: it records when it started and
ended (``TIMED_LOG``, one line per process) and returns a made-up artefact. For the launch-lock test."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from alignx.artefacts import Artefact
from alignx.train import worker


def hold(stage, args, cfg, progress=None):
    start = time.time()
    time.sleep(2.0)
    with open(os.environ["TIMED_LOG"], "a", encoding="utf-8") as log:
        log.write(f"{Path(args['out']).name} {start} {time.time()}\n")
    return Artefact(kind="model", path=args["out"], fingerprint="timed")


worker.run_stage = hold

if __name__ == "__main__":
    sys.exit(worker.main(sys.argv[1]))
