"""The benchmark registry: each benchmark is a YAML file under ``alignx/eval/tasks`` over shared scorers.

A spec says where the data is (mirror file or hub dataset), how a document becomes a prompt (Jinja
templates, as lm-evaluation-harness writes them) and which metrics it reports. Adding a benchmark is
adding a YAML file; per-language wording (connectors, question words) is data in the same file.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from alignx.languages import get_language

TASKS_DIR = Path(__file__).resolve().parent / "tasks"

# lm-eval renders with this environment (lm_eval/utils.py); the same settings give the same strings.
_JINJA = jinja2.Environment(loader=jinja2.BaseLoader(), undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


class UnknownBenchmarkError(ValueError):
    """A benchmark name that the registry does not know."""


class BenchmarkSpecError(ValueError):
    """A benchmark YAML file that does not describe a valid benchmark."""


class SourceSpec(BaseModel):
    """Where a benchmark's documents are: a file pattern in the data mirror and/or a hub dataset."""

    model_config = ConfigDict(extra="forbid")

    mirror: str | None = None  # relative to the data mirror; {code} is the dataset's language code
    format: Literal["jsonl", "json", "tsv", "lines", "parquet"] = "jsonl"
    columns: list[str] | None = None  # names of a header-less TSV's columns
    hub: str | None = None
    hub_config: str | None = "{code}"
    split: str = "test"
    revision: str | None = None  # a commit, tag or branch to pin; None: the default branch (resolved for keys)
    fields: list[str] = []  # every document must have these


class BenchmarkSpec(BaseModel):
    """One benchmark, as read from its YAML file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["multiple_choice", "generate", "translation"]
    description: str = ""
    languages: list[str]
    codes: dict[str, str] | Literal["flores"] = {}  # our ISO code -> the dataset's code
    source: SourceSpec
    preprocess: str | None = None  # a name in alignx.eval.sources.PREPROCESSORS
    preprocess_languages: list[str] | None = None  # None: every language
    # multiple choice: one context and several continuations, or ("multiple input") several contexts
    # and one continuation
    context: str | None = None
    choices: list[str] | None = None
    contexts: list[str] | None = None
    continuation: str | None = None
    gold: str | None = None
    target_delimiter: str = " "
    # generation
    target: str | None = None
    fewshot_delimiter: str = "\n\n"
    until: list[str] = []
    # translation
    pivot: str = "en"
    no_lid: list[str] = []  # languages the LID model cannot identify: no off-target rate
    metrics: list[str]
    vars: dict[str, Any] = {}
    per_language: dict[str, dict[str, Any]] = {}

    @model_validator(mode="after")
    def _check_kind_fields(self) -> "BenchmarkSpec":
        problems = []
        if self.kind == "multiple_choice":
            single = self.context is not None and self.choices is not None
            multi = self.contexts is not None and self.continuation is not None
            if single == multi:
                problems.append("a multiple_choice benchmark needs either context + choices or contexts + continuation")
            if self.gold is None:
                problems.append("a multiple_choice benchmark needs 'gold'")
        if self.kind == "generate" and (self.context is None or self.target is None):
            problems.append("a generate benchmark needs 'context' and 'target'")
        if self.source.mirror is None and self.source.hub is None:
            problems.append("source needs 'mirror' or 'hub'")
        if self.source.format == "tsv" and not self.source.columns:
            problems.append("a TSV source needs 'columns'")
        unknown = set(self.per_language) - set(self.languages)
        if unknown:
            problems.append(f"per_language has languages not in 'languages': {sorted(unknown)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def multiple_input(self) -> bool:
        """lm-eval's "multiple input" mode: the choices are contexts and the continuation is shared."""
        return self.contexts is not None

    def code_for(self, lang: str) -> str:
        """The dataset's code for one of our languages (e.g. ja -> jp, sw -> swh_Latn)."""
        if self.codes == "flores":
            return get_language(lang).flores
        return self.codes.get(lang, lang)

    def template_vars(self, lang: str) -> dict[str, Any]:
        """Variables the templates see besides the document's fields (shared, then per language)."""
        return {**self.vars, **self.per_language.get(lang, {})}


@dataclass(frozen=True)
class ChoiceItem:
    """One multiple-choice document as log-likelihood requests."""

    requests: list[tuple[str, str]]  # (context, continuation) per choice
    choice_strings: list[str]  # what acc_norm divides by (lm-eval: the doc_to_choice strings)
    gold: int


@dataclass(frozen=True)
class GenerationItem:
    """One generation document: the prompt, the gold answer, the stop strings."""

    prompt: str
    target: str
    until: list[str]


def render(template: str, doc: dict[str, Any], variables: dict[str, Any]) -> str:
    """Render one Jinja template over a document's fields plus the spec's variables."""
    return _template(template).render({**variables, **doc})


@functools.lru_cache(maxsize=512)
def _template(source: str) -> jinja2.Template:
    return _JINJA.from_string(source)


def choice_item(spec: BenchmarkSpec, lang: str, doc: dict[str, Any]) -> ChoiceItem:
    """The log-likelihood requests of one multiple-choice document, exactly as lm-eval builds them."""
    env = spec.template_vars(lang)
    gold = int(render(spec.gold, doc, env))
    delim = spec.target_delimiter
    if spec.multiple_input:
        contexts = [render(t, doc, env) for t in spec.contexts]
        cont = render(spec.continuation, doc, env)
        return ChoiceItem([(c, f"{delim}{cont}") for c in contexts], contexts, gold)
    context = render(spec.context, doc, env)
    choices = [render(t, doc, env) for t in spec.choices]
    return ChoiceItem([(context, f"{delim}{c}") for c in choices], choices, gold)


def generation_item(
    spec: BenchmarkSpec, lang: str, doc: dict[str, Any], exemplars: list[dict[str, Any]] = ()
) -> GenerationItem:
    """The prompt of one generation document, preceded by any exemplars (context + delimiter + target)."""
    env = spec.template_vars(lang)
    shots = [
        render(spec.context, ex, env) + spec.target_delimiter + render(spec.target, ex, env) for ex in exemplars
    ]
    prompt = spec.fewshot_delimiter.join([*shots, render(spec.context, doc, env)])
    until = [render(u, {}, env) for u in spec.until]
    return GenerationItem(prompt, render(spec.target, doc, env), until)


# ---------------------------------------------------------------- the registry
def load_spec(path: Path) -> BenchmarkSpec:
    """Read and validate one benchmark YAML file; errors name the file and every problem."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise BenchmarkSpecError(f"benchmark file {path}: cannot be read as YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise BenchmarkSpecError(f"benchmark file {path}: expected a mapping, found {type(raw).__name__}")
    try:
        return BenchmarkSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors())
        raise BenchmarkSpecError(f"benchmark file {path}: {problems}") from None


@functools.lru_cache(maxsize=4)
def registry(tasks_dir: Path = TASKS_DIR) -> dict[str, BenchmarkSpec]:
    """Every benchmark spec under ``tasks_dir``, by name."""
    specs = {}
    for path in sorted(Path(tasks_dir).glob("*.yaml")):
        spec = load_spec(path)
        if spec.name in specs:
            raise BenchmarkSpecError(f"benchmark file {path}: name {spec.name!r} is already defined")
        specs[spec.name] = spec
    return specs


def known_benchmarks() -> list[str]:
    """Names of the registered benchmarks."""
    return sorted(registry())


def get_benchmark(name: str) -> BenchmarkSpec:
    """The spec of a benchmark, or an error listing the known ones."""
    specs = registry()
    if name not in specs:
        raise UnknownBenchmarkError(f"unknown benchmark {name!r}; known benchmarks: {', '.join(sorted(specs))}")
    return specs[name]


def validate_benchmarks(names: list[str]) -> list[BenchmarkSpec]:
    """Specs for a list of names; every unknown name is reported at once with the known ones."""
    specs = registry()
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise UnknownBenchmarkError(
            f"unknown benchmark(s) {', '.join(map(repr, unknown))}; known benchmarks: {', '.join(sorted(specs))}"
        )
    return [specs[n] for n in names]
