"""Evaluate one checkpoint: every configured benchmark and language, then the alignment metrics.

``evaluate_model`` validates everything it will read before loading the model (every problem at
once), checks that every translation prompt and alignment sentence fits the model's context before
any benchmark runs (``check_prompt_lengths``, again every problem at once), then writes ``metrics.json`` (lm-evaluation-harness-like) and ``items/<task>.jsonl`` (one row
per item, for paired intervals between models) into an atomically created directory.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from alignx.artefacts import Artefact, atomic_dir, atomic_write_json, read_marker, write_marker
from alignx.config import PipelineConfig
from alignx.data.instructions import encode_examples, translation_instruction
from alignx.distributed_run import written_once
from alignx.eval.eval_records import ITEMS_DIR, METRICS_FILE
from alignx.eval import alignment as align
from alignx.eval.evaluation_plan import EvalInputError, EvalPlan, benchmark_fingerprint, plan_evaluation
from alignx.eval.finished_parts import FinishedParts, evaluation_key
from alignx.eval.generation import GreedyGenerator
from alignx.eval.loglik import LoglikelihoodScorer, model_max_length
from alignx.eval.scoring import evaluate_choice, evaluate_generation, evaluate_translation
from alignx.eval.translation import translation_prompts
from alignx.mirror import resolve_mirror
from alignx.progress import Progress

__all__ = ["EvalInputError", "benchmark_fingerprint", "check_prompt_lengths", "evaluate_model", "load_model",
           "report_layer"]

log = logging.getLogger(__name__)



def eval_dtype(dtype: str, device: str) -> torch.dtype:
    """``eval.dtype`` on ``device``: "auto" is bfloat16 on a CUDA device that supports it, else float32."""
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, dtype)


def load_model(model_path: str, device: str = "cpu", dtype: str = "float32"):
    """A Hugging Face causal LM and its tokenizer in eval mode on ``device``, in ``dtype`` (eval.dtype)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":  # this process's GPU (a launched group's processes each have their own)
        device = f"cuda:{torch.cuda.current_device()}"
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=eval_dtype(dtype, device)).to(device).eval()
    return model, tokenizer


def report_layer(cfg: PipelineConfig, n_layers: int) -> int:
    """The hidden_states index whose alignment the tables report (the contrastive loss's layer)."""
    layer = cfg.eval.alignment.layer
    layer = layer if layer is not None else cfg.stage1.align_layer_for(n_layers)  # an int, or the middle block
    if not 0 <= layer <= n_layers:
        raise ValueError(f"alignment layer {layer} is out of range 0..{n_layers} for this model")
    return layer


def evaluate_model(model_path: str, cfg: PipelineConfig, out_dir: Path, progress: Progress | None = None) -> Artefact:
    """Run cfg.eval's benchmarks and alignment metrics on one checkpoint; write ``out_dir`` atomically.

    Raises ``UnknownBenchmarkError`` / ``EvalInputError`` (every missing or malformed input at once)
    before the model is loaded. ``progress(done, total, desc)`` is called as work completes (a tqdm
    bar when None). Returns the ``eval`` artefact of ``out_dir``.
    """
    plan = plan_evaluation(cfg, resolve_mirror(cfg.data_mirror))
    model, tokenizer = load_model(model_path, cfg.eval.device, cfg.eval.dtype)
    n_layers = int(model.config.get_text_config().num_hidden_layers)
    layer = report_layer(cfg, n_layers)
    layers = align.resolve_layers(cfg.eval.alignment.layers, n_layers, layer)  # a bad list fails before any work
    check_prompt_lengths(plan, tokenizer, cfg, model_max_length(model, tokenizer))
    tracker = _Tracker(progress, plan.total(cfg.eval.alignment.encodings if plan.alignment else []))
    run = _Collected()
    parts = FinishedParts(Path(out_dir), evaluation_key(model_path, cfg))  # what a killed attempt finished
    _run_tasks(plan, model, tokenizer, cfg, tracker, run, parts)
    alignment = _run_alignment(plan, model, tokenizer, cfg, layer, layers, tracker, run, parts)
    tracker.close()
    metrics_doc = {
        "results": run.results,
        "groups": _group_means(run.results, run.tasks),
        "tasks": run.tasks,
        "n-samples": {task: len(rows) for task, rows in run.items.items()},
        "alignment": alignment,
        "alignment_layer": layer,
        "alignment_layers": layers,
        "num_layers": n_layers,
        "config": {"eval": cfg.eval.model_dump(mode="json"), "languages": cfg.languages, "pivot": cfg.pivot},
        "model": {"path": str(model_path), "fingerprint": getattr(read_marker(Path(model_path)), "fingerprint", None)},
        "benchmark_fingerprint": benchmark_fingerprint(cfg),
        "seconds": run.seconds,
    }
    out_dir = Path(out_dir)

    def write_output() -> None:  # under several processes every one holds the same results; one writes
        with atomic_dir(out_dir) as tmp:
            (tmp / ITEMS_DIR).mkdir()
            for task, rows in run.items.items():
                lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
                (tmp / ITEMS_DIR / f"{task}.jsonl").write_text(lines, encoding="utf-8")
            atomic_write_json(tmp / METRICS_FILE, metrics_doc)
        write_marker(out_dir, "eval", {"metrics": str(out_dir / METRICS_FILE), "groups": metrics_doc["groups"]})
        track_evaluation(cfg, out_dir.name, str(model_path), metrics_doc)

    artefact = written_once(out_dir, write_output)
    parts.remove()
    return artefact


def track_evaluation(cfg: PipelineConfig, name: str, model_path: str, doc: dict) -> None:
    """The headline metrics (each group's means, and the align layer's alignment) as the tracked run
    ``<profile>/eval-<name>``, beside the training curves."""
    from alignx.tracking import Tracker

    values = {f"{group}/{metric}": float(v) for group, metrics in doc["groups"].items()
              for metric, v in metrics.items() if isinstance(v, (int, float))}
    tracker = Tracker(cfg.tracking, cfg.resolved_run_root(), cfg.name, f"eval-{name}",
                      {"model": model_path, "eval": doc["config"]["eval"], "languages": cfg.languages})
    tracker.log(0, values)
    tracker.close()


def check_prompt_lengths(plan: EvalPlan, tokenizer, cfg: PipelineConfig, max_length: int) -> None:
    """Raise ``EvalInputError`` listing every item that cannot fit the model's context (before any benchmark runs).

    Checked, per task and language: a translation prompt (stage-1 template, no response) must fit in
    ``max_length - eval.max_new_tokens`` (the generator keeps only the prompt's last tokens, which would
    cut its instruction or source); an alignment sentence in the ``prompt`` encoding must have its span
    end within ``max_length`` (both prompt directions: X->pivot and pivot->X); in the ``alone`` encoding
    all its tokens. Multiple-choice and MGSM contexts are left-truncated as lm-evaluation-harness does,
    so they are not checked.
    """
    problems: list[str] = []
    room = max_length - cfg.eval.max_new_tokens
    longer = ", or raise bootstrap.model.max_position_embeddings" if cfg.base_model is None else ""
    for unit in plan.units:
        if unit.spec.kind == "translation":
            prompts = translation_prompts(tokenizer, unit.src, unit.tgt, [d["source"] for d in unit.docs], sys.maxsize)
            _too_long(problems, f"{unit.task} prompts", [len(p) for p in prompts], room,
                      f"the model's context length {max_length} minus eval.max_new_tokens {cfg.eval.max_new_tokens}",
                      "lower eval.max_new_tokens, or leave the language out (eval.languages)" + longer)
    for set_name, texts in plan.alignment.items():
        for encoding in cfg.eval.alignment.encodings:
            fix = f"drop {encoding!r} from eval.alignment.encodings, or leave the language out (eval.languages)"
            for what, lengths in _alignment_lengths(tokenizer, set_name, texts, cfg.pivot, encoding):
                _too_long(problems, what, lengths, max_length, "the model's context length", fix + longer)
    if problems:
        raise EvalInputError(problems)


def _alignment_lengths(tokenizer, set_name: str, texts: dict[str, list[str]], pivot: str,
                       encoding: str) -> Iterator[tuple[str, list[int]]]:
    """(what, the tokens each sentence needs) for every language and prompt direction the alignment encodes."""
    for lang, sentences in texts.items():
        if encoding == "alone":
            ids, _ = align.encode_alone(tokenizer, sentences)
            yield f"alignment {set_name} alone, {lang} sentences", [len(i) for i in ids]
            continue
        for other in [pivot] if lang != pivot else [x for x in texts if x != pivot]:
            rows = [(translation_instruction(lang, other), t, None) for t in sentences]
            encoded = encode_examples(tokenizer, rows, sys.maxsize, add_eos=False)
            yield (f"alignment {set_name} prompt ({lang}->{other}), {lang} sentences",
                   [e.src_span[1] if e.src_span else len(e.input_ids) for e in encoded])


def _too_long(problems: list[str], what: str, lengths: list[int], limit: int, limit_is: str, fix: str) -> None:
    """Add one problem naming every item of ``what`` longer than ``limit`` tokens, with its token count."""
    bad = [(i, n) for i, n in enumerate(lengths) if n > limit]
    if bad:
        items = ", ".join(f"{i} ({n} tokens)" for i, n in bad)
        problems.append(f"{what}: {len(bad)} of {len(lengths)} items do not fit in {limit} tokens ({limit_is}): "
                        f"{'items' if len(bad) > 1 else 'item'} {items}; to fix: {fix}")


class _Collected:
    """Per-task results, report rows, per-item rows and timings, as tasks finish."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, dict[str, str]] = {}  # task -> its group (the average it enters) and row label
        self.items: dict[str, list[dict]] = {}
        self.seconds: dict[str, float] = {}

    def add(self, task: str, group: str, label: str, metrics: dict[str, Any], rows: list[dict], seconds: float) -> None:
        self.results[task], self.items[task] = metrics, rows
        self.tasks[task] = {"group": group, "label": label}
        self.seconds[task] = round(seconds, 3)


def _run_tasks(plan: EvalPlan, model, tokenizer, cfg: PipelineConfig, tracker: "_Tracker", run: _Collected,
               parts: FinishedParts) -> None:
    """Every benchmark task of the plan, with one scorer and one generator shared by all; a task in
    ``parts`` (finished by a killed attempt) is read, not run, and each task is kept there as it ends."""
    scorer = LoglikelihoodScorer(model, tokenizer, cfg.eval.batch_size, cfg.eval.share_context)
    generator = GreedyGenerator(model, tokenizer, cfg.eval.batch_size, cfg.eval.max_new_tokens)
    top_label = _lid_top_label(cfg) if any(u.spec.kind == "translation" for u in plan.units) else None
    for unit in plan.units:
        done = parts.get(unit.task)
        if done is not None:
            run.add(unit.task, unit.group, unit.label, done["metrics"], done["rows"], done["seconds"])
            tracker.step(unit.task)(done["work"])
            continue
        start = time.perf_counter()
        step, work = tracker.counted(unit.task)
        if unit.spec.kind == "multiple_choice":
            metrics, rows = evaluate_choice(unit.spec, unit.lang, unit.docs, scorer, step)
        elif unit.spec.kind == "generate":
            metrics, rows = evaluate_generation(unit.spec, unit.lang, unit.docs, generator, plan.exemplars.get(unit.spec.name, []), step)
        else:
            metrics, rows = evaluate_translation(
                unit.spec, unit.src, unit.tgt, [d["source"] for d in unit.docs], [d["reference"] for d in unit.docs],
                generator, top_label, step)
        run.add(unit.task, unit.group, unit.label, metrics, rows, time.perf_counter() - start)
        parts.put(unit.task, {"metrics": metrics, "rows": rows, "seconds": run.seconds[unit.task], "work": work()})
        log.info("%s: %s (%.1fs)", unit.task, metrics, run.seconds[unit.task])


def _run_alignment(plan: EvalPlan, model, tokenizer, cfg: PipelineConfig, layer: int, layers: list[int],
                   tracker: "_Tracker", run: _Collected, parts: FinishedParts) -> dict[str, Any]:
    """Alignment per set and encoding at ``layers`` (the forward pass stops after the deepest);
    per-layer means are returned, the report layer goes to results. One set and encoding is one
    finished part (``parts``), as a benchmark task is."""
    per_layer: dict[str, Any] = {}
    for set_name, texts in plan.alignment.items():
        for encoding in cfg.eval.alignment.encodings:
            task = f"align_{set_name}_{encoding}"
            done = parts.get(task)
            if done is None:
                start = time.perf_counter()
                step, work = tracker.counted(task)
                scores = align.evaluate_alignment(model, tokenizer, texts, cfg.pivot, encoding, cfg.eval.batch_size,
                                                  step, layers=layers)
                done = {"by_layer": {lang: s.by_layer() for lang, s in scores.items()},
                        "rows": {lang: [{"doc_id": i, **{m: getattr(s, m)[:, i].tolist() for m in align.METRICS}}
                                        for i in range(s.x2en_top1.shape[1])] for lang, s in scores.items()},
                        "metrics": {lang: {m: float(getattr(s, m)[s.row(layer)].mean()) for m in align.METRICS}
                                    for lang, s in scores.items()},
                        "seconds": time.perf_counter() - start}
                parts.put(task, {**done, "work": work()})
            else:
                tracker.step(task)(done["work"])
            per_layer.setdefault(set_name, {})[encoding] = done["by_layer"]
            for lang in done["rows"]:
                run.add(f"{task}_{lang}", task, lang, done["metrics"][lang], done["rows"][lang], done["seconds"])
    return per_layer


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

    def counted(self, desc: str) -> tuple[Callable[[int], None], Callable[[], int]]:
        """``step(desc)`` and a function that tells how much it has advanced (a finished part's work)."""
        advanced = [0]
        advance = self.step(desc)

        def counting(n: int) -> None:
            advanced[0] += n
            advance(n)
        return counting, lambda: advanced[0]

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
