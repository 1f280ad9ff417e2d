"""The comparison report: per-benchmark tables by arm, paired bootstrap differences, a summary, plots.

Inputs are the eval directories ``evaluate_model`` wrote (``metrics.json`` + ``items/``), one per arm.
A difference between two arms is computed on the items both evaluated, with a paired bootstrap 95%
interval per language and, averaged over languages, a bootstrap that resamples within each language.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignx.artefacts import Artefact, atomic_dir, atomic_write_json, write_marker
from alignx.config import PipelineConfig
from alignx.eval.eval_records import ITEMS_DIR, METRICS_FILE
from alignx.eval.stats import excludes_zero, paired_bootstrap, stratified_paired_bootstrap
from alignx.jsonl import iter_jsonl
from alignx.training_records import read_log, read_run_record

# (treatment, reference): AlignX against the compute-matched control and against SFT only.
COMPARISONS = (("alignx", "control"), ("alignx", "sft"), ("alignx-stage1", "control-stage1"))
# Metrics with a value per item (so they get intervals), in the order the summary lists them.
HEADLINE = ("acc", "exact_match", "chrf_seg", "off_target", "x2en_top1", "en2x_top1", "cos_gap")
LOWER_IS_BETTER = {"off_target"}
_TWO_DECIMALS = {"bleu", "chrf", "chrf_seg"}
ALIGN_METRICS = ["x2en_top1", "en2x_top1", "cos_gap"]
_METRIC_ORDER = ("acc", "acc_norm", "exact_match", "bleu", "chrf", "chrf_seg", "off_target", *ALIGN_METRICS)


class ReportInputError(ValueError):
    """An arm's eval directory is missing or does not hold what ``evaluate_model`` writes."""


@dataclass
class ArmEval:
    """One arm's evaluation: its metrics.json and (lazily) its per-item rows."""

    name: str
    path: Path
    doc: dict[str, Any]
    _items: dict[str, dict[int, dict]] = field(default_factory=dict)

    @classmethod
    def load(cls, name: str, path: Path) -> "ArmEval":
        file = Path(path) / METRICS_FILE
        if not file.is_file():
            raise ReportInputError(f"arm {name!r}: no {METRICS_FILE} in {path} (expected an evaluate_model output)")
        try:
            doc = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ReportInputError(f"arm {name!r}: {file} is not valid JSON ({exc.msg})") from None
        missing = [k for k in ("results", "tasks") if k not in doc]
        if missing:
            raise ReportInputError(f"arm {name!r}: {file} lacks {missing} (found keys {sorted(doc)})")
        return cls(name, Path(path), doc)

    def values(self, task: str, metric: str) -> dict[int, float]:
        """Per-item values of one metric (alignment metrics at this arm's reported layer)."""
        if task not in self._items:
            file = self.path / ITEMS_DIR / f"{task}.jsonl"
            if not file.is_file():
                raise ReportInputError(f"arm {self.name!r}: per-item file {file} is missing")
            rows = {}
            for n, row in iter_jsonl(file, ReportInputError):
                if not isinstance(row, dict) or "doc_id" not in row:
                    raise ReportInputError(f"{file} line {n}: expected a per-item object with 'doc_id', "
                                           f"found {str(row)[:80]!r}")
                rows[row["doc_id"]] = row
            self._items[task] = rows
        position = self.layer_position(self.doc.get("alignment_layer", 0))
        out = {}
        for doc_id, row in self._items[task].items():
            value = row.get(metric)
            if isinstance(value, list):
                value = value[position] if position is not None else None
            if value is not None:
                out[doc_id] = float(value)
        return out


    def computed_layers(self) -> list[int] | None:
        """The hidden_states indices of this arm's per-layer lists (None: every index, 0..n)."""
        if "alignment_layers" in self.doc:
            return list(self.doc["alignment_layers"])
        for encodings in self.doc.get("alignment", {}).values():
            for langs in encodings.values():
                for per_layer in langs.values():
                    if "layers" in per_layer:
                        return list(per_layer["layers"])
        return None

    def layer_position(self, layer: int) -> int | None:
        """Where hidden_states index ``layer`` sits in this arm's per-layer lists (None: not computed)."""
        layers = self.computed_layers()
        if layers is None:
            return layer
        return layers.index(layer) if layer in layers else None

    def alignment_by_layer(self, set_name: str, encoding: str) -> dict[str, list[float]]:
        """Per-layer means over languages: ``layers`` (hidden_states indices) and each alignment metric."""
        langs = self.doc.get("alignment", {}).get(set_name, {}).get(encoding, {})
        if not langs:
            return {}
        first = next(iter(langs.values()))
        width = min(len(v[ALIGN_METRICS[0]]) for v in langs.values())
        layers = list(first.get("layers", range(width)))[:width]
        return {"layers": layers, **{m: _mean_lists([v[m] for v in langs.values()]) for m in ALIGN_METRICS}}


@dataclass
class Report:
    markdown: str  # the whole report, plots linked relative to report.md
    summary: list[str]
    sections: list[str]  # the markdown without the plots (for a Prefect artifact)


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if metric in _TWO_DECIMALS else f"{value:.3f}"


def _fmt_diff(metric: str, diff: float, lo: float, hi: float) -> str:
    p = 2 if metric in _TWO_DECIMALS else 3
    mark = " *" if excludes_zero(lo, hi) else ""
    return f"{diff:+.{p}f} [{lo:+.{p}f}, {hi:+.{p}f}]{mark}"


def _groups(arms: dict[str, ArmEval], benchmarks: list[str]) -> dict[str, dict[str, str]]:
    """group -> {task: row label} over every arm: benchmarks in config order, alignment last."""
    out: dict[str, dict[str, str]] = {}
    for arm in arms.values():
        for task, info in arm.doc["tasks"].items():
            out.setdefault(info["group"], {})[task] = info["label"]

    def rank(group: str) -> tuple[int, int, str]:
        bench = next((i for i, b in enumerate(benchmarks) if group == b or group.startswith(f"{b}_")), len(benchmarks))
        return (group.startswith("align_"), bench, group)

    return {g: dict(sorted(out[g].items(), key=lambda kv: kv[1])) for g in sorted(out, key=rank)}


def _ordered_metrics(names: list[str]) -> list[str]:
    known = [m for m in _METRIC_ORDER if m in names]
    return known + sorted(set(names) - set(known))


def _paired(a: ArmEval, b: ArmEval, task: str, metric: str) -> tuple[list[float], list[float]] | None:
    if task not in a.doc["results"] or task not in b.doc["results"]:
        return None
    va, vb = a.values(task, metric), b.values(task, metric)
    common = sorted(set(va) & set(vb))
    return ([va[i] for i in common], [vb[i] for i in common]) if common else None


def build_report(arms: dict[str, ArmEval], cfg: PipelineConfig, plot_files: dict[str, str] | None = None) -> Report:
    """Tables, differences with intervals, and the summary, as Markdown."""
    resamples, seed = cfg.eval.bootstrap_resamples, cfg.eval.bootstrap_seed
    comparisons = [(t, r) for t, r in COMPARISONS if t in arms and r in arms]
    groups = _groups(arms, cfg.eval.benchmarks)
    layers = {a.doc.get("alignment_layer") for a in arms.values()} - {None}
    sections = [
        f"# AlignX evaluation report ({cfg.name})",
        "Arms: " + ", ".join(f"`{n}` ({a.path})" for n, a in arms.items()) + ".",
        f"Alignment metrics are reported at hidden_states layer {', '.join(map(str, sorted(layers))) or '–'}; "
        f"intervals are paired bootstrap 95% ({resamples} resamples, seed {seed}) over shared items; "
        "`*` marks an interval that excludes zero.",
    ]
    summary: list[str] = []
    compared: list[tuple[str, str, str, str, float, float, float]] = []  # treat, ref, group, metric, d, lo, hi
    for group, tasks in groups.items():
        metrics = _ordered_metrics(list({m for a in arms.values() for t in tasks for m in a.doc["results"].get(t, {})}))
        sections.append(f"## {group}")
        for metric in metrics:
            header = f"| {metric} | " + " | ".join(arms) + " |"
            lines = [header, "|---" * (len(arms) + 1) + "|"]
            for task, label in tasks.items():
                cells = [_fmt(metric, a.doc["results"].get(task, {}).get(metric)) for a in arms.values()]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            avg = [_fmt(metric, a.doc.get("groups", {}).get(group, {}).get(metric)) for a in arms.values()]
            lines.append("| **average** | " + " | ".join(avg) + " |")
            sections.append("\n".join(lines))
        headline = [m for m in HEADLINE if m in metrics]
        for treat, ref in comparisons:
            diff_lines, rows_avg = [], []
            for metric in headline:
                pairs = {label: _paired(arms[treat], arms[ref], task, metric) for task, label in tasks.items()}
                pairs = {k: v for k, v in pairs.items() if v is not None}
                if not pairs:
                    continue
                cells = {k: _fmt_diff(metric, *paired_bootstrap(a, b, resamples, seed)) for k, (a, b) in pairs.items()}
                d, lo, hi = stratified_paired_bootstrap(list(pairs.values()), resamples, seed)
                cells["**average**"] = _fmt_diff(metric, d, lo, hi)
                diff_lines.append((metric, cells))
                rows_avg.append((metric, d, lo, hi, sum(len(a) for a, _ in pairs.values())))
            if not diff_lines:
                continue
            labels = list(dict.fromkeys(k for _, cells in diff_lines for k in cells))
            table = [f"| {treat} − {ref} | " + " | ".join(m for m, _ in diff_lines) + " |",
                     "|---" * (len(diff_lines) + 1) + "|"]
            table += [f"| {label} | " + " | ".join(c.get(label, "–") for _, c in diff_lines) + " |" for label in labels]
            sections.append("\n".join(table))
            summary += [_summary_line(treat, ref, group, *row) for row in rows_avg]
            compared += [(treat, ref, group, *row[:4]) for row in rows_avg]
    sections += _layer_tables(arms)
    if not comparisons:
        summary.append(f"no comparison possible: arms {sorted(arms)} lack the pairs {[f'{t}/{r}' for t, r in COMPARISONS]}")
    verdict = downstream_verdict(compared)
    if verdict:
        summary.insert(0, verdict)
    head = "## Summary\n" + "\n".join(f"- {line}" for line in summary)
    sections.insert(3, head)
    plot_md = []
    if plot_files:
        plot_md.append("## Plots")
        plot_md += [f"![{title}]({rel})" for title, rel in plot_files.items()]
    return Report("\n\n".join(sections + plot_md) + "\n", summary, sections)


LAYER_TABLE_METRICS = (("x2en_top1", "X→en"), ("en2x_top1", "en→X"))


def _layer_tables(arms: dict[str, ArmEval]) -> list[str]:
    """One table per alignment set and encoding: top-1 retrieval both ways by layer, for every arm.

    Means over languages; a row per hidden_states index any arm computed, the reported layer marked.
    """
    out = []
    sets = sorted({s for a in arms.values() for s in a.doc.get("alignment", {})})
    for set_name in sets:
        encodings = sorted({e for a in arms.values() for e in a.doc.get("alignment", {}).get(set_name, {})})
        for encoding in encodings:
            curves = {name: arm.alignment_by_layer(set_name, encoding) for name, arm in arms.items()}
            curves = {name: c for name, c in curves.items() if c}
            if not curves:
                continue
            reported = {a.doc.get("alignment_layer") for a in arms.values()}
            layers = sorted({k for c in curves.values() for k in c["layers"]})
            header = "| layer | " + " | ".join(f"{name} {label}" for name in curves for _, label in LAYER_TABLE_METRICS) + " |"
            lines = [f"## Alignment by layer: {set_name}, {encoding}",
                     "Top-1 retrieval (mean over languages) at each hidden_states index; * the layer the tables report.",
                     header, "|---" * (1 + len(curves) * len(LAYER_TABLE_METRICS)) + "|"]
            for layer in layers:
                cells = []
                for curve in curves.values():
                    at = curve["layers"].index(layer) if layer in curve["layers"] else None
                    cells += [_fmt(m, None if at is None else curve[m][at]) for m, _ in LAYER_TABLE_METRICS]
                label = f"{layer} *" if layer in reported else str(layer)
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            out.append("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]))
    return out


# What a downstream verdict weighs: task quality (accuracy, chrF++ per segment), and apart from it whether
# the model answers in the requested language (a wrong-language answer already scores low on chrF++, so
# an off-target change alone is not a gain in translation)
QUALITY = ("acc", "exact_match", "chrf_seg")
LANGUAGE = ("off_target",)


def downstream_verdict(compared: list[tuple[str, str, str, str, float, float, float]]) -> str | None:
    """One sentence: does AlignX beat the compute-matched control downstream (benchmarks, translation)?

    Judged on the language-averaged differences with paired intervals, better or worse only where the
    interval excludes zero. "Helps" and "hurts" are about task quality; a change in the off-target rate
    is stated beside it, never counted as quality. None when the control or AlignX was not evaluated
    downstream.
    """
    rows = [(g, m, d, lo, hi) for t, r, g, m, d, lo, hi in compared
            if (t, r) == ("alignx", "control") and m in QUALITY + LANGUAGE]
    if not rows:
        return None

    def split(metrics: tuple[str, ...]) -> tuple[list[str], list[str], int]:
        better, worse = [], []
        chosen = [row for row in rows if row[1] in metrics]
        for group, metric, d, lo, hi in chosen:
            if excludes_zero(lo, hi):
                good = (d < 0) if metric in LOWER_IS_BETTER else (d > 0)
                (better if good else worse).append(f"{group} {metric} {_fmt_diff(metric, d, lo, hi).rstrip(' *')}")
        return better, worse, len(chosen)

    better, worse, n = split(QUALITY)
    tested = f"{n} quality comparison{'s' if n != 1 else ''} (accuracy, chrF++) with the compute-matched control"
    if better and not worse:
        verdict = f"Downstream, AlignX helps: better on {'; '.join(better)}, worse on none of the {tested}."
    elif worse and not better:
        verdict = f"Downstream, AlignX hurts: worse on {'; '.join(worse)}, better on none of the {tested}."
    elif better:
        verdict = f"Downstream, AlignX is mixed: better on {'; '.join(better)}; worse on {'; '.join(worse)} ({tested})."
    elif n:
        verdict = f"Downstream, AlignX does not measurably help: none of the {tested} has an interval that excludes zero."
    else:
        verdict = "Downstream quality was not compared (no accuracy or chrF++ for both AlignX and the control)."
    fewer, more, _ = split(LANGUAGE)
    if fewer or more:
        verdict = verdict[:-1] + "; " + "; ".join(
            ([f"it answers in the requested language more often ({'; '.join(fewer)})"] if fewer else [])
            + ([f"it answers in another language more often ({'; '.join(more)})"] if more else [])) + "."
    return verdict


def _summary_line(treat: str, ref: str, group: str, metric: str, d: float, lo: float, hi: float, n: int) -> str:
    if excludes_zero(lo, hi):
        better = (d < 0) if metric in LOWER_IS_BETTER else (d > 0)
        verdict = f"interval excludes zero ({treat} {'better' if better else 'worse'})"
    else:
        verdict = "interval includes zero (no detectable difference)"
    return f"{treat} − {ref}, {group} {metric}: {_fmt_diff(metric, d, lo, hi).rstrip(' *')} over {n} items: {verdict}"


def _plots(arms: dict[str, ArmEval], cfg: PipelineConfig, curves: dict[str, Path] | None, out: Path) -> dict[str, str]:
    """Write every plot under ``out/plots``; returns title -> path relative to ``out``."""
    from alignx.eval import plots  # matplotlib: only where a report is drawn

    (out / "plots").mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    sets = sorted({s for a in arms.values() for s in a.doc.get("alignment", {})})
    for set_name in sets:
        per_arm = {}
        for name, arm in arms.items():
            encodings = arm.doc.get("alignment", {}).get(set_name, {})
            per_arm[name] = {enc: arm.alignment_by_layer(set_name, enc) for enc, langs in encodings.items() if langs}
        rel = f"plots/alignment_{set_name}.png"
        layer = next((a.doc.get("alignment_layer") for a in arms.values() if "alignment_layer" in a.doc), None)
        plots.alignment_by_layer(per_arm, ALIGN_METRICS, f"{set_name}: alignment by layer (mean over languages)",
                                 out / rel, marked_layer=layer)
        files[f"{set_name} alignment by layer"] = rel
    for group, tasks in _groups(arms, cfg.eval.benchmarks).items():
        metrics = [m for m in HEADLINE if any(m in a.doc["results"].get(t, {}) for a in arms.values() for t in tasks)]
        if not metrics:
            continue
        values = {n: {label: a.doc["results"].get(t, {}).get(metrics[0]) for t, label in tasks.items()} for n, a in arms.items()}
        rel = f"plots/bars_{group}.png"
        plots.language_bars(values, metrics[0], f"{group}: {metrics[0]}", out / rel)
        files[f"{group} {metrics[0]} by language"] = rel
    if curves:
        logs = {arm: read_log(Path(p)) for arm, p in curves.items()}
        stages = {arm: read_run_record(Path(p).parent).get("stage") for arm, p in curves.items()}
        plots.training_curves(logs, out / "plots" / "training_curves.png",
                              {arm: stage for arm, stage in stages.items() if stage})
        files["training curves"] = "plots/training_curves.png"
    return files


def _mean_lists(lists: list[list[float]]) -> list[float]:
    width = min(len(v) for v in lists)
    return [sum(v[k] for v in lists) / len(lists) for k in range(width)]


def report_markdown(arms: dict[str, Path], cfg: PipelineConfig) -> str:
    """The report's Markdown without plots (e.g. for a Prefect markdown artifact)."""
    report = build_report({n: ArmEval.load(n, p) for n, p in arms.items()}, cfg)
    return "\n\n".join(report.sections) + "\n"


def write_report(arms: dict[str, Path], cfg: PipelineConfig, out_dir: Path, curves: dict[str, Path] | None = None) -> Artefact:
    """Write ``report.md``, ``summary.json`` and ``plots/*.png`` for the arms' eval dirs into ``out_dir``.

    ``arms`` maps arm name (base, sft, control, alignx, alignx-stage1, ...) to its eval directory;
    ``curves`` maps a label to a ``train_log.jsonl``. Returns the artefact with meta ``report`` (path),
    ``summary`` (one line per compared metric) and ``markdown`` (the report without plots).
    """
    if not arms:
        raise ReportInputError("write_report needs at least one arm")
    loaded = {name: ArmEval.load(name, Path(path)) for name, path in arms.items()}
    missing_curves = [f"{arm}: {p}" for arm, p in (curves or {}).items() if not Path(p).is_file()]
    if missing_curves:
        raise ReportInputError(f"training logs not found: {', '.join(missing_curves)}")
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        files = _plots(loaded, cfg, curves, tmp)
        report = build_report(loaded, cfg, files)
        (tmp / "report.md").write_text(report.markdown, encoding="utf-8")
        atomic_write_json(tmp / "summary.json", {"summary": report.summary, "arms": {n: str(p) for n, p in arms.items()}})
    markdown = "\n\n".join(report.sections) + "\n"
    return write_marker(out_dir, "report", {"report": str(out_dir / "report.md"), "summary": report.summary,
                                            "markdown": markdown,
                                            "plots": {title: str(out_dir / rel) for title, rel in files.items()}})
