"""One preflight before any work: every stage's input checks, every problem reported at once.

The config (and the align layer against the base model's depth) is validated when it is loaded. This
adds what the stages would otherwise find hours in: each data source's files for every language pair,
the language-ID model, the base model's package or file (not its weights), each general
instruction file's presence and schema, and each benchmark's and alignment set's data. The pipeline
runs it before the data stage; ``alignx check --profile X`` runs it alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from alignx.config import ConfigError, PipelineConfig
from alignx.mirror import resolve_mirror

log = logging.getLogger(__name__)


class PreflightError(ValueError):
    """The run cannot succeed as configured; ``problems`` lists every problem found."""

    def __init__(self, profile: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"profile {profile!r}: {len(problems)} problem(s) before any work:\n"
                         + "\n".join(f"  - {p}" for p in problems))


def _collect(problems: list[str], what: str, check: Callable[[], Any]) -> None:
    try:
        check()
    except (ValueError, OSError, ImportError) as exc:  # the stages' own input errors, with their messages
        found = getattr(exc, "problems", None)
        if isinstance(exc, ConfigError) or not found:
            problems.append(f"{what}: {exc}")
        else:
            problems.extend(f"{what}: {p}" for p in found)


def _check_source(name: str, cfg: PipelineConfig) -> None:
    from alignx.data.sources import HubReader, open_source

    reader = open_source(name, resolve_mirror(cfg.data_mirror))
    pairs = reader.pairs(cfg.pivot, cfg.languages)
    if isinstance(reader, HubReader):
        return  # read from the hub (online) or its local copy: the reader names what is missing when read
    missing = [str(path) for src, tgt in pairs for path in reader.files(src, tgt) if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"files not found: {', '.join(missing[:5])}" + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))


def _check_instructions(cfg: PipelineConfig) -> None:
    from alignx.data.instructions import general_rows

    for source in cfg.stage2.general:
        general_rows(source)  # reads and validates every record; raises naming the file and line


def _check_evaluation(cfg: PipelineConfig) -> None:
    from alignx.eval.plan import plan_evaluation

    if cfg.eval.benchmarks or cfg.eval.alignment.sets:
        plan_evaluation(cfg, resolve_mirror(cfg.data_mirror))  # reads every benchmark file; all problems at once


def preflight_problems(cfg: PipelineConfig) -> list[str]:
    """Every problem the stages of this config would meet on their inputs ([] when there is none)."""
    from alignx.data.langid import prepare_model
    from alignx.model import base_models

    problems: list[str] = []
    for name in cfg.data.sources:
        _collect(problems, f"data source {name!r}", lambda name=name: _check_source(name, cfg))
    _collect(problems, "language-ID model", lambda: prepare_model(cfg.data.langid))
    if cfg.base_model:
        _collect(problems, f"base_model {cfg.base_model!r}", lambda: base_models.check_available(cfg.base_model))
    trains_stage2 = cfg.stage2.enabled and any(arm != "base" for arm in cfg.arms)
    if trains_stage2:
        _collect(problems, "stage2.general", lambda: _check_instructions(cfg))
    _collect(problems, "evaluation", lambda: _check_evaluation(cfg))
    return problems


def preflight(cfg: PipelineConfig) -> None:
    """Raise ``PreflightError`` listing every problem, or return when the run can start."""
    problems = preflight_problems(cfg)
    if problems:
        raise PreflightError(cfg.name, problems)
    log.info("preflight: data sources, language-ID model, base model, instruction files and benchmarks are usable")
