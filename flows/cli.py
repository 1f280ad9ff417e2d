"""The ``alignx`` command: run flows locally (Prefect's ephemeral API by default), deploy, start workers.

It lives beside the flows it runs, so the library never imports Prefect. Before any work, a command
reports every problem at once: the config's invalid keys, its arguments' and the preflight's findings
on the inputs of the stages it runs (``alignx.preflight``); it then exits 2 having run nothing
(``alignx check`` exits 1: finding problems is its job). A failure during the work prints one line
(what failed, where, what to do) and exits non-zero; the full log with every traceback goes to a file
under ``data/logs/`` whose path it prints (``--verbose`` shows it all).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from alignx.config import REPO_ROOT, ConfigError, PipelineConfig
from alignx.plan_report import text_table as _table
from alignx.preflight import PreflightError, profile_problems
from alignx.profiles import available_profiles
from alignx.stages_and_arms import ARMS, STAGE1_ARMS, STAGE2_ARMS, STAGES, TRAINING_STAGES
from flows.stopping import Terminated, chain_has, end_if_threads_run, failure_line, on_sigterm, say


def _prefect_env(run_root: Path | None) -> None:
    # Must be set before prefect is imported; a user's own settings win. A run's Prefect home (its
    # ephemeral API database, task results and cache records) lives in its run root, beside its locks.
    os.environ.setdefault("PREFECT_HOME", str((run_root or REPO_ROOT) / ".prefect"))
    # prefect creates its home with mkdir(exist_ok) without parents: a fresh run root would warn
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _overrides(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The overrides a command runs its profile with: ``--set``, and its own options that are config keys."""
    overrides = _overrides(args.set)
    if getattr(args, "benchmarks", None) is not None:  # eval; "" means none: alignment only
        overrides["eval.benchmarks"] = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    if getattr(args, "arms", None):  # pipeline
        overrides["arms"] = args.arms.split(",")
    return overrides


def _stages(args: argparse.Namespace) -> tuple[str, ...]:
    """The stages whose inputs a command needs: those it runs, the upstream stages it runs first included."""
    if args.command == "data":
        return ("data",)
    if args.command == "train":
        return STAGES[: STAGES.index(args.stage) + 1]
    if args.command == "eval":
        return ("evaluate",)  # a given checkpoint: no upstream stage runs
    if args.command == "plan":
        return ()  # reads the config and the model's shape only
    return STAGES  # pipeline, check


def _argument_problems(args: argparse.Namespace) -> list[str]:
    problems = []
    if args.command == "train" and args.stage == "stage1" and args.arm not in STAGE1_ARMS:
        problems.append(f"--arm: stage1 trains arm {' or '.join(map(repr, sorted(STAGE1_ARMS)))}, not {args.arm!r} "
                        "(sft starts at stage 2)")
    if args.command == "eval" and not Path(args.model).is_dir():
        problems.append(f"--model: {args.model} is not a checkpoint directory")
    return problems


def cmd_data(args: argparse.Namespace) -> int:
    from alignx.artefacts import Artefact
    from alignx.data.data_stages import summary_table
    from flows.params import RunParams
    from flows.stage_flows import data_flow

    record = Artefact.model_validate(data_flow(RunParams(profile=args.profile, overrides=_overrides(args.set))))
    from alignx.artefacts import read_marker

    print(f"shards: {record.path}")
    filtered = record.meta.get("filtered")
    marker = read_marker(Path(filtered)) if filtered else None
    if marker is not None:
        print(_table(summary_table(marker)))
        for warning in marker.meta.get("warnings", []):
            print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from flows import stage_flows
    from flows.params import RunParams, Stage1Params, Stage2Params

    overrides = _overrides(args.set)
    if args.stage == "bootstrap":
        result = stage_flows.bootstrap_flow(RunParams(profile=args.profile, overrides=overrides))
    elif args.stage == "stage1":
        result = stage_flows.stage1_flow(Stage1Params(profile=args.profile, overrides=overrides, arm=args.arm))
    else:
        result = stage_flows.stage2_flow(Stage2Params(profile=args.profile, overrides=overrides, arm=args.arm))
    print(f"checkpoint: {result['path']}")
    print(json.dumps(result.get("meta", {}).get("final_loss", result.get("meta", {})), indent=2, default=str))
    return 0


def _eval_name(model: Path) -> str:
    """An evaluation's default label: the checkpoint directory's name without its fingerprint suffix
    (``control-stage1-3f2a...`` -> ``control-stage1``), so evaluations of different models differ."""
    stem = model.name
    head, _, tail = stem.rpartition("-")
    if head and len(tail) == 16 and all(c in "0123456789abcdef" for c in tail):
        stem = head
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in stem).strip("-.") or "model"


def cmd_eval(args: argparse.Namespace) -> int:
    from flows.params import StageParams
    from flows.stage_flows import evaluate_flow

    overrides = _config_overrides(args)
    model = Path(args.model).resolve()
    name = args.name or _eval_name(model)
    result = evaluate_flow(StageParams(profile=args.profile, overrides=overrides), model_path=str(model), name=name)
    metrics = json.loads((Path(result["path"]) / "metrics.json").read_text(encoding="utf-8"))
    rows = [{"task": t, **{m: (f"{v:.4f}" if isinstance(v, float) else v) for m, v in ms.items() if not isinstance(v, (dict, list))}}
            for t, ms in metrics["results"].items()]
    print(_table(rows))
    print(f"metrics: {Path(result['path']) / 'metrics.json'}")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from flows.params import PipelineParams
    from flows.pipeline import pipeline

    params = PipelineParams(profile=args.profile, overrides=_overrides(args.set),
                            arms=args.arms.split(",") if args.arms else None, stop_after=args.stop_after)
    result = pipeline(params)
    print(json.dumps(result, indent=2))
    if "report" in result:
        print(f"\nreport: {result['report']}")
    return 0


def report_check(name: str, cfg: PipelineConfig | None, problems: list[str]) -> int:
    """``alignx check``: the preflight alone; every problem, 1 when there is one, else 0."""
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if problems or cfg is None:
        print(f"profile {name!r}: {len(problems)} problem(s); nothing was run", file=sys.stderr)
        return 1
    print(f"profile {name!r}: config, data sources, language-ID model, base model, instruction files and "
          f"benchmarks are usable (run root {cfg.resolved_run_root()})")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Per-GPU memory of each training stage under DDP, FSDP and LoRA; 0 when each stage's configured
    strategy (``train.lora``, ``train.sharding``) fits, 1 when one does not, 2 when the model has no shape."""
    from alignx.model.model_catalogue import BaseModelError
    from alignx.plan_report import print_plan
    from alignx.profiles import load_profile

    cfg = load_profile(args.profile, _overrides(args.set))
    try:
        return print_plan(cfg, args.gpus, args.gpu_memory)
    except (BaseModelError, ValueError) as exc:  # no shape for the model, LoRA targets it does not have
        print(f"error: {exc}", file=sys.stderr)
        return 2


def cmd_deploy(args: argparse.Namespace) -> int:
    """Create the work pools and the ``gpu`` task concurrency limit, then register every deployment
    (a schedule a user switched on or off keeps that state across redeploys)."""
    from flows.deploy import deploy

    rc, restored = deploy(args.gpu_slots)
    for line in restored:
        print(line)
    return rc


def cmd_worker(args: argparse.Namespace) -> int:
    """Become the Prefect worker (exec: SIGTERM and Ctrl-C reach it directly and stop it cleanly)."""
    cmd = [str(Path(sys.executable).with_name("prefect")), "worker", "start", "--pool", args.pool, "--type", "process"]
    os.chdir(REPO_ROOT)
    os.execv(cmd[0], cmd)
    return 0  # not reached


def _card_evaluations(args: argparse.Namespace) -> list[Path]:
    from alignx.model.model_card import find_evaluations

    if args.eval:
        return [Path(e) for e in args.eval]
    return find_evaluations(Path(args.model), Path(args.run_root) if args.run_root else None)


def cmd_card(args: argparse.Namespace) -> int:
    """Print (or write) a trained model's card with the metrics of the run's evaluations of it."""
    from alignx.artefacts import atomic_write_text
    from alignx.model.model_card import build_card

    card = build_card(Path(args.model), _card_evaluations(args))
    if args.out:
        atomic_write_text(Path(args.out), card)
        print(f"model card: {args.out}")
    else:
        print(card, end="")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    """Push a trained model folder and its rebuilt card to the Hugging Face hub (refused offline)."""
    from alignx.model.publish import PublishError, check_publishable, publish

    try:
        check_publishable(Path(args.model), args.repo)  # before the evaluations are searched
        url = publish(Path(args.model), args.repo, _card_evaluations(args), private=not args.public)
    except PublishError as exc:
        print(f"error: alignx publish: {exc}", file=sys.stderr)
        return 2
    print(f"published {args.model} to {args.repo}: {url}")
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    """Join a multi-node training stage from another node (``launch.nodes`` > 1): its agent's exit status."""
    from alignx.launch import join

    try:
        return join(Path(args.call))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def cmd_keys(args: argparse.Namespace) -> int:
    """Every profile key with its type, default and meaning (docs/profile-keys.md is this output)."""
    from alignx.artefacts import atomic_write_text
    from alignx.config_reference import reference_markdown

    text = reference_markdown()
    if args.out:
        atomic_write_text(Path(args.out), text)
        print(f"profile keys: {args.out}")
    else:
        print(text, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignx", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", action="store_true", help="show full tracebacks and multi-line log records")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_profile(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--profile", default="demo", help=f"one of: {', '.join(available_profiles())}")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="config override, dotted key, JSON value (repeatable)")
        return p

    with_profile(sub.add_parser("data", help="collect -> language-ID filter -> shards")).set_defaults(fn=cmd_data)
    p = with_profile(sub.add_parser("train", help="train one stage"))
    p.add_argument("stage", choices=TRAINING_STAGES)
    p.add_argument("--arm", default="alignx", choices=sorted(STAGE2_ARMS))
    p.set_defaults(fn=cmd_train)
    p = with_profile(sub.add_parser("eval", help="evaluate a checkpoint directory"))
    p.add_argument("--model", required=True, help="checkpoint directory")
    p.add_argument("--benchmarks", default=None,
                   help="comma-separated benchmark names; \"\" for none (alignment only); default: the profile's")
    p.add_argument("--name", "--arm", dest="name", default=None,
                   help="label of this evaluation (its output folder and report column), e.g. base, sft, "
                        "control; default: the checkpoint folder's name")
    p.set_defaults(fn=cmd_eval)
    p = with_profile(sub.add_parser("pipeline", help="the end-to-end pipeline"))
    p.add_argument("--arms", default=None, help=f"comma-separated arms ({','.join(ARMS)})")
    p.add_argument("--stop-after", default=None, choices=STAGES)
    p.set_defaults(fn=cmd_pipeline)
    with_profile(sub.add_parser("check", help="the preflight alone: config and every stage's inputs, all problems at once"))
    p = with_profile(sub.add_parser("plan", help="per-GPU memory of each training stage under DDP, FSDP and LoRA"))
    p.add_argument("--gpus", type=int, default=1, help="GPUs the stages are launched on")
    p.add_argument("--gpu-memory", type=float, default=80.0, help="memory of one GPU in GiB")
    p.set_defaults(fn=cmd_plan)
    p = sub.add_parser("deploy", help="create pools and the gpu limit, register the deployments of prefect.yaml")
    p.add_argument("--gpu-slots", type=int, default=1, help="training stages allowed at once (one per GPU worker)")
    p.set_defaults(fn=cmd_deploy)
    for name, fn, help_text in (("card", cmd_card, "a trained model's card (README.md) with its run's metrics"),
                                ("publish", cmd_publish, "push a trained model folder and its card to the hub")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--model", required=True, help="a model folder a training stage wrote")
        p.add_argument("--eval", action="append", default=[], metavar="DIR",
                       help="an evaluation folder of this model (repeatable); default: every evaluation of it "
                            "under the run root's eval/")
        p.add_argument("--run-root", default=None, help="default: the model folder's grandparent")
        if name == "card":
            p.add_argument("--out", default=None, help="write the card here instead of printing it")
        else:
            p.add_argument("--repo", required=True, help="owner/name on the Hugging Face hub")
            p.add_argument("--public", action="store_true", help="create the repository public (default: private)")
        p.set_defaults(fn=fn)
    p = sub.add_parser("join", help="join a multi-node training stage from another node (launch.nodes > 1)")
    p.add_argument("call", help="the stage's call file, as the first node's log names it")
    p.set_defaults(fn=cmd_join)
    p = sub.add_parser("keys", help="every profile key: type, default, meaning (docs/profile-keys.md)")
    p.add_argument("--out", default=None, help="write the reference here instead of printing it")
    p.set_defaults(fn=cmd_keys)
    p = sub.add_parser("worker", help="start a process worker on a work pool")
    p.add_argument("--pool", default="alignx-cpu")
    p.set_defaults(fn=cmd_worker)
    return parser


LOG_DIR = REPO_ROOT / "data" / "logs"
_RUNS_FLOWS = {"data", "train", "eval", "pipeline"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run_root = None
    if getattr(args, "profile", None) is not None:
        try:  # the config's problems and the preflight's, in one list, before any work
            cfg, problems = profile_problems(args.profile, _config_overrides(args), _stages(args))
        except ConfigError as exc:  # the profile itself cannot be read
            print(f"error: {exc}", file=sys.stderr)
            return 2
        problems = _argument_problems(args) + problems
        name = cfg.name if cfg is not None else str(args.profile)
        if args.command == "check":
            return report_check(name, cfg, problems)
        if problems or cfg is None:
            print(f"error: {PreflightError(name, problems)}", file=sys.stderr)
            return 2
        run_root = cfg.resolved_run_root()
    _prefect_env(run_root)
    log_dir = run_root / "logs" if run_root else LOG_DIR
    log_file = log_dir / f"alignx-{args.command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    server = None
    if args.command in _RUNS_FLOWS:
        from alignx.watchdog import watch
        from flows.temporary_server import start_if_needed

        signal.signal(signal.SIGTERM, on_sigterm)
        watch()  # the temporary Prefect server and workers stop when this process dies, even by kill -9
        server = start_if_needed(log_file.with_name(f"{log_file.stem}-server.log"))  # boots while this loads its code
        if not args.verbose:
            from flows.console import quiet_console

            quiet_console(log_file)
    try:
        from flows.temporary_server import api_of

        with api_of(server):
            return args.fn(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SystemExit) as exc:
        # a stop (SIGTERM, Ctrl-C), or the reader of this process's output gone (rich's console raises
        # SystemExit on a broken pipe, also while a stop is being logged): end now, whatever still runs
        from prefect.exceptions import TerminationSignal  # what a flow run raises on SIGTERM

        if chain_has(exc, Terminated) or chain_has(exc, TerminationSignal):
            say("stopped by SIGTERM")
            code = 143
        elif chain_has(exc, KeyboardInterrupt):
            say("interrupted")
            code = 130
        else:
            code = exc.code if isinstance(exc.code, int) else 1
        end_if_threads_run(code)
        return code
    except Exception as exc:
        if args.verbose:
            raise
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("a", encoding="utf-8") as fh:
            fh.write("".join(traceback.format_exception(exc)))
        print(f"error: alignx {args.command} failed: {failure_line(exc)}", file=sys.stderr)
        print(f"  full log and traceback: {log_file} (or rerun with --verbose)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
