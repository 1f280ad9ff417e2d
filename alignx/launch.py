"""Run a training stage in the calling process, or as a fresh process group under ``torchrun``.

``run_stage`` is what the training tasks call. With ``launch.processes`` 1 the stage runs here (the
default, and what a machine without GPUs wants). Otherwise it writes the call to a file and starts
``torchrun --standalone --nproc-per-node N -m alignx.train.worker <call>``: one process per GPU (NCCL)
or N gloo processes on the CPU. The children's log lines go to ``on_line`` as they come, their
progress to ``progress``, and their end becomes the return value or an exception:

- the stage's result -> the ``Artefact`` the main process wrote;
- out of memory in any process -> ``OutOfMemoryError`` (the task's fallback starts a new group with
  activation checkpointing): torch's error, an allocation failure inside NCCL, cuBLAS or cuDNN
  (``alignx.train.worker.is_out_of_memory``), or a worker the kernel's OOM killer ended (its counter
  rose while the group ran, ``oom_kill_count``);
- an error in a process -> ``StageFailed`` with that process's one-line message;
- the group died without a word (a signal, the kernel's OOM killer, a lost node) -> ``WorkersLost``,
  an ``OSError``, which a retry resumes from the last checkpoint.

The process group dies with its caller: ``torchrun`` runs under a guard that asks the kernel to stop
it when the caller dies, and each worker does the same towards ``torchrun``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignx.artefacts import Artefact, remove_dead_temporaries, temporary_path
from alignx.config import REPO_ROOT, PipelineConfig
from alignx.progress import Progress
from alignx.train.worker import PROTOCOL, die_with_parent
from alignx.train.worker import run_stage as run_stage_here

log = logging.getLogger(__name__)
LineSink = Callable[[str], None]
_TAIL = 40  # log lines kept for the message of a group that dies without one


class StageFailed(RuntimeError):
    """A launched stage raised an error in one of its processes (bad input or a bug: not retried)."""


class OutOfMemoryError(RuntimeError):
    """A launched stage ran out of memory (named like torch's, which the task's fallback looks for)."""


class WorkersLost(ChildProcessError):
    """The process group ended without a result or an error message (killed, lost): transient."""


def oom_kill_count() -> int | None:
    """How many processes the kernel's out-of-memory killer has ended so far, where this machine says:
    this process's memory cgroup (v2 ``memory.events``, v1 ``memory.oom_control``), else the whole
    system (``/proc/vmstat``); None where none of them exists."""
    counts = []
    try:
        groups = Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines()
    except OSError:
        groups = []
    for line in groups:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            counts.append(Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.events")
        elif "memory" in controllers.split(","):
            counts.append(Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.oom_control")
    counts.append(Path("/proc/vmstat"))
    for path in counts:
        try:
            for line in path.read_text(encoding="utf-8").splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def world_size(setting: int | str) -> int:
    """Processes for ``launch.processes``: the number given, or one per visible GPU for "gpus"."""
    if setting == "gpus":
        import torch

        return max(1, torch.cuda.device_count())
    return int(setting)


def run_stage(
    stage: str,
    args: dict[str, Any],
    cfg: PipelineConfig,
    *,
    progress: Progress | None = None,
    on_line: LineSink | None = None,
    worker_module: str = "alignx.train.worker",
) -> Artefact:
    """Run ``stage`` (bootstrap, stage1, stage2, evaluate) with ``args`` (paths as strings, ``out``, ``control``).

    ``worker_module`` is the entry point each process runs (tests wrap the standard one).
    """
    processes = world_size(cfg.launch.processes)
    if stage == "evaluate" and cfg.eval.device == "cpu":
        processes = 1  # data-parallel evaluation is for GPUs; CPU evaluation keeps its lm-eval parity path
    import torch

    if torch.cuda.is_available() and stage != "evaluate":
        check_fits(stage, args, cfg, processes, torch.cuda.get_device_properties(0).total_memory / 2**30)
    on_gpu = torch.cuda.is_available() and not (stage == "evaluate" and cfg.eval.device == "cpu")
    with machine_lock(cfg.launch.host_lock if (on_gpu or processes > 1) else "", stage, on_line):
        if processes == 1 and cfg.launch.nodes == 1:
            return run_stage_here(stage, args, cfg, progress)
        return launch(stage, args, cfg, processes, progress=progress, on_line=on_line, worker_module=worker_module)


@contextlib.contextmanager
def machine_lock(path: str, stage: str, on_line: LineSink | None = None, poll_s: float = 0.5):
    """Hold the machine's launch lock (``launch.host_lock``) while a stage that takes its GPUs or all its
    cores runs: two such stages on one machine run one after the other, never on the same devices.

    Waits for the holder (its pid and stage are in the file, and in the message every minute); the
    kernel releases the lock when the holder dies, however it dies. ``path`` "" holds nothing.
    """
    if not path:
        yield
        return
    import fcntl

    sink = on_line or (lambda line: log.info("%s", line))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        waited, said = 0.0, -1.0
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if waited - said >= 60 or said < 0:
                    handle.seek(0)
                    holder = handle.read().strip() or "another stage"
                    sink(f"{stage} waits for this machine's devices: held by {holder} ({path})")
                    said = waited
                time.sleep(poll_s)
                waited += poll_s
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} ({stage}, since {time.strftime('%H:%M:%S')})")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_fits(stage: str, args: dict[str, Any], cfg: PipelineConfig, gpus: int, gpu_memory_gib: float) -> None:
    """Refuse a stage whose memory plan (``alignx.memory_plan``) exceeds the GPU before anything starts.

    The plan holds back a reserve for the CUDA context and fragmentation; a stage over that line but
    within the whole memory only gets a warning (the plan is an estimate), one over the whole is refused.
    """
    from alignx import memory_plan
    from alignx.config import ConfigError

    train = getattr(cfg, stage).train
    shape = memory_plan.bootstrap_shape(cfg) if stage == "bootstrap" else memory_plan.base_model_shape(str(args["model"]))
    strategy = memory_plan.configured_strategy(train, gpus)
    est = memory_plan.estimate(shape, train, strategy, gpus, "cuda",
                        stage1_head_width=cfg.stage1.lam_width if stage == "stage1" else None)
    need, have = est.total / 2**30, gpu_memory_gib
    if memory_plan.fits(est, gpu_memory_gib):
        return
    where = f"{stage} needs about {need:.1f} GiB per GPU under {strategy} on {gpus} GPU(s) of {have:.0f} GiB"
    if est.total <= gpu_memory_gib * 2**30:
        log.warning("%s: within the GPU but over the plan's reserve", where)
        return
    hints = [h for h, off in ((f"{stage}.train.gradient_checkpointing: true", not train.gradient_checkpointing),
                              (f"{stage}.train.sharding: fsdp with launch.processes > 1",
                               train.sharding == "none" and train.lora is None),
                              (f"{stage}.train.lora", train.lora is None and train.sharding == "none"),
                              (f"a smaller {stage}.train.micro_batch_size", train.micro_batch_size > 1)) if off]
    raise ConfigError(f"for {stage}", [f"{where} (the plan: params {est.params / 2**30:.1f}, grads "
                                       f"{est.grads / 2**30:.1f}, optimizer {est.optimizer / 2**30:.1f}, activations "
                                       f"{est.activations / 2**30:.1f}); try {'; or '.join(hints) or 'more GPUs'} "
                                       f"(`alignx plan --profile {cfg.name}` shows each)"])


def launch(
    stage: str,
    args: dict[str, Any],
    cfg: PipelineConfig,
    processes: int,
    *,
    progress: Progress | None = None,
    on_line: LineSink | None = None,
    worker_module: str = "alignx.train.worker",
) -> Artefact:
    """Start the stage as ``processes`` processes and wait for it (see the module doc)."""
    out = Path(args["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    # named as a temporary of ``out`` by this process, so the stage's next writer removes it if we die
    remove_dead_temporaries(out)
    call_file = temporary_path(out)
    call_file.write_text(json.dumps({"stage": stage, "args": args, "config": cfg.model_dump(mode="json"),
                                     "worker_module": worker_module}), encoding="utf-8")
    command = agent_command(cfg, processes, out, worker_module, call_file)
    env = agent_env()
    sink = on_line or (lambda line: log.info("%s", line))
    nodes = cfg.launch.nodes
    sink(f"launching {stage} as {processes} processes{f' on each of {nodes} nodes' if nodes > 1 else ''}: "
         f"{' '.join(command[3:])}")
    if nodes > 1:
        sink(f"the other {nodes - 1} node(s) join with: alignx join {call_file}  (from a checkout of this code "
             f"that sees the same run root; the group starts when all {nodes} have joined)")
    result: Artefact | None = None
    failure: dict[str, Any] | None = None
    oom: dict[str, Any] | None = None
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL)
    kills_before = oom_kill_count()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, errors="replace", env=env, cwd=REPO_ROOT, start_new_session=True)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            if not line.startswith(PROTOCOL):
                tail.append(line)
                sink(line)
                continue
            kind, _, payload = line[len(PROTOCOL):].partition(" ")
            message = json.loads(payload)
            if kind == "progress" and progress is not None:
                progress(message["done"], message["total"], message["metrics"])
            elif kind == "result":
                result = Artefact.model_validate(message)
            elif kind == "oom":
                oom = oom or message
            elif kind == "error":
                failure = failure or message
        code = proc.wait()
    finally:
        _stop(proc)
        call_file.unlink(missing_ok=True)
    if oom is not None:
        raise OutOfMemoryError(f"{stage} ran out of memory in process {oom['rank']}: {oom['message']}")
    if failure is not None:
        error = StageFailed(f"{stage} failed in process {failure['rank']} of {processes}: "
                            f"{failure['type']}: {failure['message']}")
        error.log_tail = list(tail)  # the traceback the process printed, for a caller that shows no log
        raise error
    if code != 0 or result is None:
        kills_after = oom_kill_count()
        if kills_before is not None and kills_after is not None and kills_after > kills_before:
            raise OutOfMemoryError(f"{stage}: the kernel's out-of-memory killer ended a process of the group of "
                                   f"{processes} (host memory ran out: {kills_after - kills_before} kill(s) while it "
                                   "ran). Last lines:\n" + "\n".join(list(tail)[-10:]))
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        raise WorkersLost(f"{stage}: the process group of {processes} ended ({how}) without a result; a rerun "
                          f"resumes from the last checkpoint. Last lines:\n" + "\n".join(tail))
    return result


def agent_command(cfg: PipelineConfig, processes: int, out: Path, worker_module: str, call_file: Path) -> list[str]:
    """This machine's torchrun agent: alone (``--standalone``), or one of ``launch.nodes`` meeting at a
    c10d rendezvous whose id is the stage's output name (``launch.rdzv_id`` overrides it)."""
    if cfg.launch.nodes == 1:
        where = ["--standalone"]
    else:
        where = [f"--nnodes={cfg.launch.nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={cfg.launch.rdzv_endpoint}",
                 f"--rdzv-id={cfg.launch.rdzv_id or Path(out).name}"]
    return [sys.executable, "-m", "alignx.launch", *where, f"--nproc-per-node={processes}",
            "-m", worker_module, str(call_file)]


def agent_env() -> dict[str, str]:
    return {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}


def join(call_file: Path, on_line: LineSink = print) -> int:
    """Join a multi-node stage from another node: start this node's agent for the call the first node
    wrote (``launch.nodes`` > 1), one process per GPU here or ``launch.processes``; returns its exit
    status. The results are written by the first node; this node's processes only train."""
    from alignx.profiles import parse_config

    call_file = Path(call_file)
    try:
        call = json.loads(call_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"{call_file}: no readable stage call ({exc}); is the run root shared with the "
                                "first node, and is its stage still waiting?") from None
    cfg = parse_config(call["config"], source=str(call_file))
    if cfg.launch.nodes == 1:
        raise ValueError(f"{call_file}: that stage runs on one node (launch.nodes 1): nothing to join")
    command = agent_command(cfg, world_size(cfg.launch.processes), Path(call["args"]["out"]),
                            call.get("worker_module", "alignx.train.worker"), call_file)
    on_line(f"joining {call['stage']} ({Path(call['args']['out']).name}): {' '.join(command[3:])}")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, errors="replace", env=agent_env(), cwd=REPO_ROOT, start_new_session=True)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            on_line(raw.rstrip("\n"))
        return proc.wait()
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """End the group if it is still running (the caller was interrupted): ask, then insist."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


if __name__ == "__main__":  # torchrun's agent, stopped by the kernel when the launching process dies
    die_with_parent()
    from torch.distributed.run import main as torchrun_main

    torchrun_main(sys.argv[1:])
