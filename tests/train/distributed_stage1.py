"""Run under ``torchrun --nproc_per_node 2``: stage 1 of both arms across two processes (gloo, CPU).

Arguments: base model dir, shards dir, config JSON file, output root, results dir. Each process
writes one JSON file per arm (its rank, the world size and the artefact it returned) into the results
dir: the processes share one stdout, where their lines can interleave.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from alignx.distributed_run import process_state
from alignx.profiles import parse_config
from alignx.train.training_stages import train_stage1


def main() -> None:
    base, shards, cfg_file, out, results = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
    cfg = parse_config(json.loads(cfg_file.read_text(encoding="utf-8")))
    state = process_state()  # before training, as a user's launch script may
    for arm in ("alignx", "control"):
        art = train_stage1(base, shards, cfg, out / arm, control=arm == "control")
        record = {"arm": arm, "rank": state.process_index, "world": state.num_processes,
                  "fingerprint": art.fingerprint, "steps": art.meta["steps"]}
        (results / f"{arm}-rank{state.process_index}.json").write_text(json.dumps(record), encoding="utf-8")


if __name__ == "__main__":
    main()
