"""One preflight before any work: the config's problems and every stage's input checks, reported at once.

Config validation finds what a field alone shows (``alignx.config``); the checks here find what the
stages would otherwise meet hours in: the align layer against the depth of the model stage 1 trains,
each data source's files for every language pair, the language-ID model, the base model's package or
file (not its weights), each general instruction file's presence and schema, and each benchmark's and
alignment set's data. An invalid config field does not stop the checks that do not read it
(``profile_problems``). The pipeline runs the checks before the data stage; ``alignx check`` runs them alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignx.config import ConfigError, PipelineConfig
from alignx.mirror import resolve_mirror
from alignx.profiles import check_profile
from alignx.stages_and_arms import STAGES
from alignx.validation import paths_overlap

log = logging.getLogger(__name__)


class PreflightError(ValueError):
    """The run cannot succeed as configured; ``problems`` lists every problem found."""

    def __init__(self, profile: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"profile {profile!r}: {len(problems)} problem(s) before any work:\n"
                         + "\n".join(f"  - {p}" for p in problems))


def _collect(problems: list[str], what: str | None, check: Callable[[], Any]) -> None:
    """Run one check; its error (or each of its ``problems``) becomes a line, prefixed with ``what``."""
    try:
        check()
    except (ValueError, OSError, ImportError) as exc:  # the stages' own input errors, with their messages
        found = getattr(exc, "problems", None)
        lines = [str(exc)] if isinstance(exc, ConfigError) or not found else list(found)
        problems.extend(f"{what}: {line}" if what else line for line in lines)


# ---------------------------------------------------------------- the checks
def _data_sources(cfg: PipelineConfig) -> list[str]:
    problems: list[str] = []
    for name in cfg.data.sources:
        _collect(problems, f"data source {name!r}", lambda name=name: _check_source(name, cfg))
    return problems


def _check_source(name: str, cfg: PipelineConfig) -> None:
    from alignx.data.readers.hub_dataset import HubReader
    from alignx.data.source_catalogue import open_source

    reader = open_source(name, resolve_mirror(cfg.data_mirror))
    pairs = reader.pairs(cfg.pivot, cfg.languages)
    if isinstance(reader, HubReader):
        return  # read from the hub (online) or its local copy: the reader names what is missing when read
    missing = [str(path) for src, tgt in pairs for path in reader.files(src, tgt) if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"files not found: {', '.join(missing[:5])}" + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))


def _langid_model(cfg: PipelineConfig) -> list[str]:
    from alignx.data.langid import prepare_model

    problems: list[str] = []
    _collect(problems, "language-ID model", lambda: prepare_model(cfg.data.langid))
    return problems


def _base_model(cfg: PipelineConfig) -> list[str]:
    from alignx.model import base_models

    problems: list[str] = []
    if cfg.base_model:
        _collect(problems, f"base_model {cfg.base_model!r}", lambda: base_models.check_available(cfg.base_model))
    return problems


def _align_layer(cfg: PipelineConfig) -> list[str]:
    """stage1.align_layer against the depth of the model stage 1 trains: the bootstrap model's (from the
    config), else the base model's (from its catalogue entry, GGUF header or config.json; no weights)."""
    from alignx.model.base_models import base_model_depth
    from alignx.model.model_catalogue import BaseModelError

    layer = cfg.stage1.align_layer
    if not isinstance(layer, int):
        return []  # "middle" fits any depth
    if cfg.base_model is None:
        depth = cfg.bootstrap.model.num_layers
        if 1 <= layer <= depth:
            return []
        return [f"stage1.align_layer={layer} is out of range for the bootstrap model, which has {depth} layers "
                f"(bootstrap.model.num_layers): give 1..{depth} or 'middle', or set base_model to the pretrained "
                f"model this layer belongs to"]
    try:
        depth = base_model_depth(cfg.base_model, allow_hub=False)
    except BaseModelError:
        return []  # the base model check names what is wrong with it, where a stage needs the model
    if depth is None or 1 <= layer <= depth:  # a hub model's depth is read when its stage runs
        return []
    return [f"stage1.align_layer={layer} is out of range for base_model {cfg.base_model!r}, which has {depth} "
            f"layers: give 1..{depth} or 'middle'"]


def _instructions(cfg: PipelineConfig) -> list[str]:
    from alignx.data.general_instructions import general_rows

    problems: list[str] = []
    if cfg.stage2.enabled and any(arm != "base" for arm in cfg.arms):
        for i, source in enumerate(cfg.stage2.general):
            # reads and validates every record; raises naming the file and line
            _collect(problems, f"stage2.general[{i}]", lambda source=source: general_rows(source))
    return problems


def _benchmark_names(cfg: PipelineConfig) -> list[str]:
    from alignx.eval.benchmarks import validate_benchmarks

    problems: list[str] = []
    _collect(problems, "eval.benchmarks", lambda: validate_benchmarks(cfg.eval.benchmarks))
    return problems


def _evaluation_inputs(cfg: PipelineConfig) -> list[str]:
    """Every file of the known benchmarks (an unknown name does not hide the others') and alignment sets."""
    from alignx.eval.benchmarks import known_benchmarks
    from alignx.eval.evaluation_plan import plan_evaluation

    known = [name for name in cfg.eval.benchmarks if name in known_benchmarks()]
    problems: list[str] = []
    if known or cfg.eval.alignment.sets:
        checked = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"benchmarks": known})})
        _collect(problems, "evaluation", lambda: plan_evaluation(checked, resolve_mirror(cfg.data_mirror)))
    return problems


@dataclass(frozen=True)
class Check:
    """One preflight check: the stage whose inputs it checks (None: every run's, like the config itself)
    and the config fields it reads. While one of them is invalid it is left out: run on that field's
    default it would check what the run does not use."""

    stage: str | None
    reads: tuple[str, ...]
    problems: Callable[[PipelineConfig], list[str]]

    def reads_any(self, invalid: Iterable[str]) -> bool:
        return any(paths_overlap(a, b) for a in self.reads for b in invalid)


CHECKS = (
    Check(None, ("stage1.align_layer", "base_model", "bootstrap.model"), _align_layer),
    Check("bootstrap", ("base_model",), _base_model),  # the stage that prepares the base model
    Check("data", ("data.sources", "data_mirror", "pivot", "languages"), _data_sources),
    Check("data", ("data.langid",), _langid_model),
    Check("stage2", ("stage2.enabled", "stage2.general", "arms"), _instructions),
    Check("evaluate", ("eval.benchmarks",), _benchmark_names),
    Check("evaluate", ("eval.benchmarks", "eval.limit", "eval.languages", "eval.data_files", "eval.mgsm_shots",
                       "eval.mgsm_exemplars", "eval.alignment.sets", "eval.alignment.max_sentences", "data_mirror",
                       "data.sources", "pivot", "languages"), _evaluation_inputs),
)


def preflight_problems(cfg: PipelineConfig, stages: Iterable[str] = STAGES,
                       invalid: Iterable[str] = ()) -> list[str]:
    """Every problem the given stages of this config would meet on their inputs ([] when there is none).

    ``invalid``: config fields known to be invalid (``CheckedConfig.invalid``); checks reading them are left out.
    """
    stages, invalid = set(stages), tuple(invalid)
    problems: list[str] = []
    for check in CHECKS:
        if (check.stage is None or check.stage in stages) and not check.reads_any(invalid):
            problems += check.problems(cfg)
    return problems


def profile_problems(profile: str | Path, overrides: dict[str, Any] | None = None,
                     stages: Iterable[str] = STAGES) -> tuple[PipelineConfig | None, list[str]]:
    """A profile's config problems and the preflight's problems of ``stages``, in one list.

    The preflight runs on the config with its invalid fields left out, so one bad key does not hide
    a missing file. Returns the config (None when it cannot be built) and the problems ([] when it
    can run). Raises ``ConfigError`` only when the profile itself cannot be read.
    """
    checked = check_profile(profile, overrides)
    problems = list(checked.problems)
    if checked.config is not None:
        problems += preflight_problems(checked.config, stages, checked.invalid)
    return checked.config, problems


def preflight(cfg: PipelineConfig) -> None:
    """Raise ``PreflightError`` listing every problem, or return when the run can start."""
    problems = preflight_problems(cfg)
    if problems:
        raise PreflightError(cfg.name, problems)
    log.info("preflight: align layer, data sources, language-ID model, base model, instruction files and "
             "benchmarks are usable")
