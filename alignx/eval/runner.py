"""Evaluate one checkpoint: every configured benchmark and language, then the alignment metrics.

``evaluate_model`` validates everything it will read before loading the model (every problem at
once), then writes ``metrics.json`` (lm-evaluation-harness-like) and ``items/<task>.jsonl`` (one row
per item, for paired intervals between models) into an atomically created directory.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignx.artefacts import Artefact, atomic_dir, atomic_write_json, file_digest, read_marker, write_marker
from alignx.config import REPO_ROOT, PipelineConfig, fingerprint
from alignx.eval import alignment as align
from alignx.eval.benchmarks import BenchmarkSpec, TASKS_DIR, validate_benchmarks
from alignx.eval.generation import GreedyGenerator
from alignx.eval.loglik import LoglikelihoodScorer
from alignx.eval.scoring import evaluate_choice, evaluate_generation, evaluate_translation
from alignx.eval.sources import BenchmarkDataError, read_documents, source_files
from alignx.mirror import DataUnavailableError, resolve_mirror

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
METRICS_FILE = "metrics.json"
ITEMS_DIR = "items"


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
    units: list[Unit]
    exemplars: list[dict]
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
            relative = align.parallel_file(set_name, lang)
        except ValueError:
            continue
        if lang in langs:
            continue
        if mirror is not None and (mirror / relative).is_file():
            langs.append(lang)
        else:
            log.warning("alignment on %s: no file for %s in the mirror; left out", set_name, lang)
    return langs


def read_exemplars(path: str, shots: int) -> list[dict]:
    """The first ``shots`` exemplars from a TSV (question, answer) or JSONL (question, answer_number) file."""
    file = Path(path) if Path(path).is_absolute() else REPO_ROOT / path
    if not file.is_file():
        raise DataUnavailableError(f"MGSM exemplar file not found: {file} (eval.mgsm_exemplars)")
    rows = []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if file.suffix == ".jsonl":
            row = json.loads(line)
            row.setdefault("answer_number", row.get("answer"))
        else:
            cells = line.split("\t")
            if len(cells) != 2:
                raise BenchmarkDataError(f"{file} line {n}: expected 2 tab-separated columns (question, answer), found {len(cells)}")
            row = {"question": cells[0], "answer_number": cells[1]}
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
    exemplars: list[dict] = []
    if cfg.eval.mgsm_shots and "mgsm" in cfg.eval.benchmarks:
        if not cfg.eval.mgsm_exemplars:
            problems.append(f"eval.mgsm_shots={cfg.eval.mgsm_shots} needs eval.mgsm_exemplars (the mirror has none)")
        else:
            try:
                exemplars = read_exemplars(cfg.eval.mgsm_exemplars, cfg.eval.mgsm_shots)
            except (DataUnavailableError, BenchmarkDataError, json.JSONDecodeError) as exc:
                problems.append(str(exc))
    texts: dict[str, dict[str, list[str]]] = {}
    for set_name in cfg.eval.alignment.sets:
        if set_name == "ntrex" and any("ntrex" in s for s in cfg.data.sources):
            problems.append(f"alignment on NTREX was requested but the run trains on it (data.sources={cfg.data.sources})")
            continue
        try:
            texts[set_name] = align.read_parallel(
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


def load_model(model_path: str, device: str = "cpu"):
    """A Hugging Face causal LM and its tokenizer, float32, in eval mode on ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device).eval()
    return model, tokenizer


def report_layer(cfg: PipelineConfig, n_layers: int) -> int:
    """The hidden_states index whose alignment the tables report (the contrastive loss's layer)."""
    layer = cfg.eval.alignment.layer if cfg.eval.alignment.layer is not None else cfg.stage1.align_layer
    layer = layer if layer is not None else max(1, n_layers // 2)  # stage 1's default: the middle block
    if not 0 <= layer <= n_layers:
        raise ValueError(f"alignment layer {layer} is out of range 0..{n_layers} for this model")
    return layer


def evaluate_model(model_path: str, cfg: PipelineConfig, out_dir: Path, progress: Progress | None = None) -> Artefact:
    """Run cfg.eval's benchmarks and alignment metrics on one checkpoint; write ``out_dir`` atomically.

    ``progress(done, total, desc)`` is called as work completes (a tqdm bar when None).
    """
    mirror = resolve_mirror(cfg.data_mirror)
    plan = plan_evaluation(cfg, mirror)
    model, tokenizer = load_model(model_path, cfg.eval.device)
    n_layers = int(model.config.get_text_config().num_hidden_layers)
    layer = report_layer(cfg, n_layers)
    tracker = _Tracker(progress, plan.total(cfg.eval.alignment.encodings if plan.alignment else []))
    scorer = LoglikelihoodScorer(model, tokenizer, cfg.eval.batch_size, cfg.eval.share_context)
    generator = GreedyGenerator(model, tokenizer, cfg.eval.batch_size, cfg.eval.max_new_tokens)
    top_label = _lid_top_label(cfg) if any(u.spec.kind == "translation" for u in plan.units) else None
    results: dict[str, dict[str, Any]] = {}
    tasks: dict[str, dict[str, str]] = {}  # task -> its group (average) and row label
    items: dict[str, list[dict]] = {}
    seconds: dict[str, float] = {}
    for unit in plan.units:
        start = time.perf_counter()
        step = tracker.step(unit.task)
        if unit.spec.kind == "multiple_choice":
            metrics, rows = evaluate_choice(unit.spec, unit.lang, unit.docs, scorer, step)
        elif unit.spec.kind == "generate":
            ex = plan.exemplars if unit.spec.name == "mgsm" else []
            metrics, rows = evaluate_generation(unit.spec, unit.lang, unit.docs, generator, ex, step)
        else:
            metrics, rows = evaluate_translation(
                unit.spec, unit.src, unit.tgt, [d["source"] for d in unit.docs], [d["reference"] for d in unit.docs],
                generator, top_label, step)
        results[unit.task], items[unit.task] = metrics, rows
        tasks[unit.task] = {"group": unit.group, "label": unit.label}
        seconds[unit.task] = round(time.perf_counter() - start, 3)
        log.info("%s: %s (%.1fs)", unit.task, metrics, seconds[unit.task])
    per_layer: dict[str, Any] = {}
    for set_name, texts in plan.alignment.items():
        for encoding in cfg.eval.alignment.encodings:
            task = f"align_{set_name}_{encoding}"
            scores = align.evaluate_alignment(model, tokenizer, texts, cfg.pivot, encoding, cfg.eval.batch_size,
                                              tracker.step(task))
            per_layer.setdefault(set_name, {})[encoding] = {lang: s.by_layer() for lang, s in scores.items()}
            for lang, s in scores.items():
                results[f"{task}_{lang}"] = {m: float(getattr(s, m)[layer].mean()) for m in align.METRICS}
                tasks[f"{task}_{lang}"] = {"group": task, "label": lang}
                items[f"{task}_{lang}"] = [
                    {"doc_id": i, **{m: getattr(s, m)[:, i].tolist() for m in align.METRICS}} for i in range(s.x2en_top1.shape[1])
                ]
    tracker.close()
    metrics_doc = {
        "results": results,
        "groups": _group_means(results, tasks),
        "tasks": tasks,
        "n-samples": {task: len(rows) for task, rows in items.items()},
        "alignment": per_layer,
        "alignment_layer": layer,
        "num_layers": n_layers,
        "config": {"eval": cfg.eval.model_dump(mode="json"), "languages": cfg.languages, "pivot": cfg.pivot},
        "model": {"path": str(model_path), "fingerprint": getattr(read_marker(Path(model_path)), "fingerprint", None)},
        "benchmark_fingerprint": benchmark_fingerprint(cfg),
        "seconds": seconds,
    }
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        for task, rows in items.items():
            lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            (tmp / ITEMS_DIR).mkdir(exist_ok=True)
            (tmp / ITEMS_DIR / f"{task}.jsonl").write_text(lines, encoding="utf-8")
        atomic_write_json(tmp / METRICS_FILE, metrics_doc)
    return write_marker(out_dir, "eval", {"metrics": str(out_dir / METRICS_FILE), "groups": metrics_doc["groups"]})


def _group_means(results: dict[str, dict[str, Any]], tasks: dict[str, dict[str, str]]) -> dict[str, dict[str, float]]:
    """Averages over languages: xcopa, mgsm, flores_en-x, flores_x-en, align_<set>_<encoding>."""
    values: dict[str, dict[str, list[float]]] = {}
    for task, metrics in results.items():
        for metric, value in metrics.items():
            if value is not None:
                values.setdefault(tasks[task]["group"], {}).setdefault(metric, []).append(value)
    return {g: {m: sum(v) / len(v) for m, v in ms.items()} for g, ms in values.items()}


def _lid_top_label(cfg: PipelineConfig) -> Callable[[str], str]:
    from alignx.data.langid import LanguageIdentifier

    identifier = LanguageIdentifier(cfg.data.langid)
    return lambda text: (identifier.predict(text, 1) or [("", 0.0)])[0][0]


class _Tracker:
    """Reports progress to a callback, or to a tqdm bar when there is none."""

    def __init__(self, callback: Progress | None, total: int):
        self.callback, self.total, self.done = callback, total, 0
        self.bar = None
        if callback is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="evaluate", leave=False)

    def step(self, desc: str) -> Callable[[int], None]:
        def advance(n: int) -> None:
            self.done += n
            if self.bar is not None:
                self.bar.set_description(desc)
                self.bar.update(n)
            else:
                self.callback(min(self.done, self.total), self.total, desc)
        return advance

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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
            parts.append(_digest(mirror / align.parallel_file(set_name, lang)) if mirror else f"{set_name}:{lang}")
    if cfg.eval.mgsm_exemplars:
        parts.append(_digest(Path(cfg.eval.mgsm_exemplars)))
    return fingerprint(*parts)


def _digest(path: Path | str) -> str:
    if isinstance(path, Path) and path.is_file():
        return file_digest(path)
    return f"absent:{path}"
