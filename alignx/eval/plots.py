"""PNG plots of the report: alignment per layer, per-language bars, training curves.

Figures are built on matplotlib's object API with the Agg canvas, so no global backend is switched
and nothing needs a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from alignx.stages_and_arms import TRAINING_STAGES

CURVE_FIELDS = ("loss", "lm", "ctr", "lam")
_LABELS = {"x2en_top1": "top-1 X→en", "en2x_top1": "top-1 en→X", "cos_gap": "cosine gap (pair − random)"}


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def alignment_by_layer(
    curves: dict[str, dict[str, dict[str, list[float]]]], metrics: list[str], title: str, path: Path,
    marked_layer: int | None = None,
) -> Path:
    """One panel per (metric, encoding), one line per arm: ``curves[arm][encoding][metric]`` per layer,
    at the hidden_states indices ``curves[arm][encoding]["layers"]`` (default 0, 1, ...);
    ``marked_layer`` (the layer the tables report) gets a dashed line."""
    encodings = sorted({e for per_arm in curves.values() for e in per_arm})
    fig = Figure(figsize=(4.2 * len(encodings), 3.0 * len(metrics)))
    for r, metric in enumerate(metrics):
        for c, encoding in enumerate(encodings):
            ax = fig.add_subplot(len(metrics), len(encodings), r * len(encodings) + c + 1)
            for arm, per_arm in curves.items():
                values = per_arm.get(encoding, {}).get(metric)
                if values:
                    layers = per_arm[encoding].get("layers") or range(len(values))
                    ax.plot(list(layers)[:len(values)], values, marker="o", label=arm)
            if marked_layer is not None:
                ax.axvline(marked_layer, color="grey", linestyle="--", linewidth=0.8)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_title(f"{encoding}: {_LABELS.get(metric, metric)}", fontsize=9)
            ax.set_xlabel("layer (hidden_states index)")
            ax.grid(alpha=0.3)
            if r == 0 and c == 0:
                ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def language_bars(values: dict[str, dict[str, float | None]], metric: str, title: str, path: Path) -> Path:
    """Grouped bars: one group per language (or direction), one bar per arm: ``values[arm][label]``."""
    arms = list(values)
    labels = sorted({label for per_arm in values.values() for label in per_arm})
    fig = Figure(figsize=(max(5.0, 0.9 * len(labels) * max(len(arms), 1) / 2 + 2), 3.4))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(len(arms), 1)
    x = np.arange(len(labels))
    for k, arm in enumerate(arms):
        heights = [values[arm].get(label) for label in labels]
        ax.bar(x + k * width, [np.nan if h is None else h for h in heights], width, label=arm)
    ax.set_xticks(x + width * (len(arms) - 1) / 2, labels, rotation=30 if len(labels) > 8 else 0)
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _drawn(field: str, runs: dict[str, list[dict]]) -> bool:
    rows = [row for rows in runs.values() for row in rows]
    if field == "lm" and all(row.get("lm") == row.get("loss") for row in rows):
        return False
    return field == "loss" or any(row.get(field) not in (None, 0, 0.0) for row in rows)


def training_curves_figure(logs: dict[str, list[dict]], stages: dict[str, str] | None = None) -> Figure:
    """A row of panels per training stage, a panel per loss part its runs logged, a line per run.

    ``stages`` maps a run's label to its stage (``bootstrap``, ``stage1``, ``stage2``); runs of one
    stage share a row and their steps, so arms that saw the same batches lie on the same axes. A part
    that stays 0 for every run of a stage (``ctr`` and ``lam`` outside stage 1) gets no panel, nor
    does ``lm`` where it equals ``loss`` throughout (bootstrap, stage 2).
    """
    stages = stages or {}
    groups: dict[str, dict[str, list[dict]]] = {}
    for label, rows in logs.items():
        groups.setdefault(stages.get(label, "training"), {})[label] = rows
    order = sorted(groups, key=lambda s: TRAINING_STAGES.index(s) if s in TRAINING_STAGES else len(TRAINING_STAGES))
    fields = {stage: [f for f in CURVE_FIELDS if _drawn(f, groups[stage])] for stage in order}
    ncols = max([len(f) for f in fields.values()] + [1])
    fig = Figure(figsize=(4.2 * ncols, 3.0 * max(len(order), 1)))
    for r, stage in enumerate(order):
        for c, name in enumerate(fields[stage]):
            ax = fig.add_subplot(len(order), ncols, r * ncols + c + 1)
            for label, rows in groups[stage].items():
                points = [(row["step"], row[name]) for row in rows if row.get(name) is not None]
                if points:
                    ax.plot(*zip(*points), label=label, linewidth=1)
            ax.set_title(f"{stage}: {name}")
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return fig


def training_curves(logs: dict[str, list[dict]], path: Path, stages: dict[str, str] | None = None) -> Path:
    """``training_curves_figure`` written to ``path`` as PNG."""
    return _save(training_curves_figure(logs, stages), path)
