"""What an evaluation will read: the tasks with their documents, exemplars and parallel sets.

Everything is read and checked before any model is loaded, and every problem is reported at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignx.artefacts import file_digest, fingerprint
from alignx.config import REPO_ROOT, PipelineConfig
from alignx.eval.benchmarks import TASKS_DIR, BenchmarkSpec, validate_benchmarks
from alignx.eval.sources import BenchmarkDataError, parallel_file, read_documents, read_parallel, source_files
from alignx.jsonl import iter_jsonl
from alignx.mirror import DataUnavailableError, resolve_mirror

log = logging.getLogger(__name__)


class EvalInputError(ValueError):
    """What an evaluation would read is missing or malformed; ``problems`` lists every problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("evaluation inputs are not usable:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass
class Unit:
    """One task to run: a benchmark in one language (or translation direction)."""

    task: str
    spec: BenchmarkSpec
    lang: str
    docs: list[dict] = field(default_factory=list)
    src: str | None = None  # translation only
    tgt: str | None = None
    size: int = 0  # progress units (requests, prompts)
    group: str = ""  # the average over languages this task enters
    label: str = ""  # the task's row in the report: its language or translation direction


@dataclass
class EvalPlan:
    """Every task with its documents, the exemplars and the parallel sets of one evaluation."""

    units: list[Unit]
    exemplars: dict[str, list[dict]]  # benchmark -> few-shot exemplars
    alignment: dict[str, dict[str, list[str]]]  # set -> language -> sentences

    def total(self, encodings: list[str]) -> int:
        """Progress units: requests and prompts of every task, plus sentences the alignment encodes."""
        work = sum(u.size for u in self.units)
        for texts in self.alignment.values():
            n, others = len(next(iter(texts.values()))), len(texts) - 1
            work += sum((others + 1) * n if e == "alone" else 2 * others * n for e in encodings)
        return work


def eval_languages(spec: BenchmarkSpec, cfg: PipelineConfig) -> list[str]:
    """The configured languages (``eval.languages``, else the pipeline's) that the benchmark has."""
    wanted = cfg.eval.languages or cfg.languages
    return [lang for lang in wanted if lang in spec.languages and not (spec.kind == "translation" and lang == spec.pivot)]


def alignment_languages(cfg: PipelineConfig, set_name: str, mirror: Path | None) -> list[str]:
    """Pivot first, then every configured language whose file the set has in the mirror."""
    langs = [cfg.pivot]
    for lang in cfg.eval.languages or cfg.languages:
        try:
            relative = parallel_file(set_name, lang)
        except ValueError:
            continue
        if lang in langs:
            continue
        if mirror is not None and (mirror / relative).is_file():
            langs.append(lang)
        else:
            log.warning("alignment on %s: no file for %s in the mirror; left out", set_name, lang)
    return langs


def _exemplar_lines(file: Path) -> Iterator[tuple[int, dict]]:
    """(line number, {question, answer_number, ...}) of an exemplar file, JSONL or two-column TSV."""
    if file.suffix == ".jsonl":
        for n, row in iter_jsonl(file, BenchmarkDataError):
            if not isinstance(row, dict):
                raise BenchmarkDataError(f"{file} line {n}: expected a JSON object, found {type(row).__name__}")
            yield n, {"answer_number": row.get("answer"), **row}
        return
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            cells = line.split("\t")
            if len(cells) != 2:
                raise BenchmarkDataError(f"{file} line {n}: expected 2 tab-separated columns (question, answer), found {len(cells)}")
            yield n, {"question": cells[0], "answer_number": cells[1]}


def read_exemplars(path: str, shots: int) -> list[dict]:
    """The first ``shots`` exemplars from a TSV (question, answer) or JSONL (question, answer_number) file."""
    file = Path(path) if Path(path).is_absolute() else REPO_ROOT / path
    if not file.is_file():
        raise DataUnavailableError(f"MGSM exemplar file not found: {file} (eval.mgsm_exemplars)")
    rows = []
    for n, row in _exemplar_lines(file):
        if not row.get("question") or row.get("answer_number") in (None, ""):
            raise BenchmarkDataError(f"{file} line {n}: expected a question and an answer, found {sorted(row)}")
        rows.append(row)
    if len(rows) < shots:
        raise BenchmarkDataError(f"{file}: eval.mgsm_shots={shots} but the file has only {len(rows)} exemplars")
    return rows[:shots]


def plan_evaluation(cfg: PipelineConfig, mirror: Path | None) -> EvalPlan:
    """Every task with its documents, read and checked up front; all problems raised together."""
    specs = validate_benchmarks(cfg.eval.benchmarks)
    problems: list[str] = []
    units: list[Unit] = []
    for spec in specs:
        limit = cfg.eval.limit.get(spec.name)
        langs = eval_languages(spec, cfg)
        if not langs:
            log.warning("benchmark %s has none of the languages %s; skipped", spec.name, cfg.eval.languages or cfg.languages)
        for lang in ([spec.pivot, *langs] if spec.kind == "translation" and langs else langs):
            try:
                docs = read_documents(spec, lang, mirror, cfg.eval.data_files, limit)
            except (DataUnavailableError, BenchmarkDataError) as exc:
                problems.append(str(exc))
                continue
            if spec.kind == "translation":
                units.append(Unit(spec.name, spec, lang, docs))  # paired into directions below
            else:
                size = len(docs) * (len(spec.choices or spec.contexts or []) or 1)
                units.append(Unit(f"{spec.name}_{lang}", spec, lang, docs, size=size, group=spec.name, label=lang))
    units = _translation_directions(units)
    exemplars: dict[str, list[dict]] = {}
    if cfg.eval.mgsm_shots and "mgsm" in cfg.eval.benchmarks:
        if not cfg.eval.mgsm_exemplars:
            problems.append(f"eval.mgsm_shots={cfg.eval.mgsm_shots} needs eval.mgsm_exemplars (the mirror has none)")
        else:
            try:
                exemplars["mgsm"] = read_exemplars(cfg.eval.mgsm_exemplars, cfg.eval.mgsm_shots)
            except (DataUnavailableError, BenchmarkDataError) as exc:
                problems.append(str(exc))
    texts: dict[str, dict[str, list[str]]] = {}
    for set_name in cfg.eval.alignment.sets:
        if set_name == "ntrex" and any("ntrex" in s for s in cfg.data.sources):
            problems.append(f"alignment on NTREX was requested but the run trains on it (data.sources={cfg.data.sources})")
            continue
        try:
            texts[set_name] = read_parallel(
                set_name, alignment_languages(cfg, set_name, mirror), mirror, cfg.eval.alignment.max_sentences
            )
        except (DataUnavailableError, ValueError) as exc:
            problems.append(str(exc))
    if problems:
        raise EvalInputError(problems)
    return EvalPlan(units, exemplars, texts)


def _translation_directions(units: list[Unit]) -> list[Unit]:
    """Replace per-language translation units by en->X and X->en units."""
    out = [u for u in units if u.spec.kind != "translation"]
    by_spec: dict[str, dict[str, Unit]] = {}
    for u in units:
        if u.spec.kind == "translation":
            by_spec.setdefault(u.spec.name, {})[u.lang] = u
    for name, langs in by_spec.items():
        pivot = next(iter(langs.values())).spec.pivot
        for lang, unit in langs.items():
            if lang == pivot:
                continue
            n = min(len(unit.docs), len(langs[pivot].docs))
            for src, tgt in ((pivot, lang), (lang, pivot)):
                docs = [{"source": s["text"], "reference": r["text"]} for s, r in zip(langs[src].docs[:n], langs[tgt].docs[:n])]
                side = f"{pivot}-x" if src == pivot else f"x-{pivot}"
                out.append(Unit(f"{name}_{src}-{tgt}", unit.spec, lang, docs, src=src, tgt=tgt, size=n,
                                group=f"{name}_{side}", label=f"{src}-{tgt}"))
    return out


def benchmark_fingerprint(cfg: PipelineConfig) -> str:
    """Fingerprint of what the evaluation reads: benchmark specs, data files (or hub coordinates),
    alignment sets and exemplars. A missing file enters by name (evaluation will then report it)."""
    mirror = resolve_mirror(cfg.data_mirror)
    parts: list[Any] = []
    for spec in validate_benchmarks(cfg.eval.benchmarks):
        parts.append((TASKS_DIR / f"{spec.name}.yaml").read_text(encoding="utf-8") if (TASKS_DIR / f"{spec.name}.yaml").is_file() else spec.model_dump())
        langs = eval_languages(spec, cfg)
        langs = [spec.pivot, *langs] if spec.kind == "translation" and langs else langs
        parts += [_digest(p) for p in source_files(spec, langs, mirror, cfg.eval.data_files)]
    for set_name in cfg.eval.alignment.sets:
        for lang in alignment_languages(cfg, set_name, mirror):
            parts.append(_digest(mirror / parallel_file(set_name, lang)) if mirror else f"{set_name}:{lang}")
    if cfg.eval.mgsm_exemplars:
        parts.append(_digest(Path(cfg.eval.mgsm_exemplars)))
    return fingerprint(*parts)


def _digest(path: Path | str) -> str:
    if isinstance(path, Path) and path.is_file():
        return file_digest(path)
    return f"absent:{path}"
