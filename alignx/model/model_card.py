"""Model cards: the ``README.md`` in the Hugging Face format that every trained model folder carries.

The card says what the model is without the run that made it: a YAML header (base model, languages,
licence inherited from the base, data sets, and the run's metrics as a ``model-index``) and a body with
the arm, the stage, the steps, the final losses, the metrics with their 95% intervals and how it was made.

A training stage writes the card with what it knows (``write_card``); the metrics come later, from the
evaluations of the same folder under the run root, when ``alignx card`` or ``alignx publish`` rebuilds
it (``find_evaluations``). The model folder itself is never rewritten after its marker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from alignx.eval.eval_records import ITEMS_DIR, METRICS_FILE
from alignx.eval.stats import paired_bootstrap
from alignx.jsonl import iter_jsonl
from alignx.model.gguf_conversion import RECORD_FILE
from alignx.training_records import RUN_RECORD, read_run_record

CARD_FILE = "README.md"

# Licences as the hub's `license:` field spells them; anything else is `other` with its name
_HUB_LICENCES = {"apache-2.0": "apache-2.0", "mit": "mit", "llama3": "llama3", "llama3.1": "llama3.1",
                 "llama3.2": "llama3.2", "gemma": "gemma", "cc-by-4.0": "cc-by-4.0", "cc-by-sa-4.0": "cc-by-sa-4.0",
                 "bsd-3-clause": "bsd-3-clause"}
# How each benchmark group appears in the model-index (task type, data set id, metric labels)
_TASKS = {"flores": ("translation", "openlanguagedata/flores_plus"), "ntrex": ("translation", "mteb/NTREX"),
          "xcopa": ("multiple-choice", "cambridgeltl/xcopa"), "mgsm": ("text-generation", "juletxara/mgsm"),
          "align": ("sentence-similarity", "openlanguagedata/flores_plus")}
_METRIC_NAMES = {"chrf_seg": "chrF++ (segment mean)", "chrf": "chrF++ (corpus)", "bleu": "BLEU", "off_target":
                 "off-target rate", "acc": "accuracy", "acc_norm": "accuracy (length-normalised)", "exact_match":
                 "exact match", "x2en_top1": "X->en top-1 retrieval", "en2x_top1": "en->X top-1 retrieval",
                 "cos_gap": "cosine gap (translation - other)"}
_CORPUS_METRICS = {"chrf", "bleu"}  # corpus-level: no per-item interval


class CardError(ValueError):
    """A folder a card cannot be made for: names the folder and what it lacks."""


def base_lineage(model_dir: Path) -> list[dict[str, Any]]:
    """The run records from this model back to its base: [this stage's, its input's, ..., the base's].

    The last entry is the base model's own record (``base_model.json`` of a converted catalogue model,
    or ``{"spec": <hub id or path>}`` for a model no stage of ours wrote).
    """
    chain: list[dict[str, Any]] = []
    current: Path | str = Path(model_dir)
    seen: set[str] = set()
    while True:
        if not current:  # the bootstrap stage has no base: a model trained from scratch
            chain.append({"spec": ""})
            return chain
        path = Path(current)
        if str(path) in seen:
            raise CardError(f"{model_dir}: the run records' base_model fields form a loop at {path}")
        seen.add(str(path))
        record = read_run_record(path) if path.is_dir() else {}
        if record:
            chain.append(record)
            current = record.get("base_model") or ""
            continue
        base = path / RECORD_FILE
        if path.is_dir() and base.is_file():
            chain.append(json.loads(base.read_text(encoding="utf-8")))
        else:
            chain.append({"spec": str(current)})
        return chain


def _hub_licence(licence: str | None) -> dict[str, str]:
    if not licence:
        return {"license": "other", "license_name": "unknown: see the base model"}
    key = licence.strip().lower()
    if key in _HUB_LICENCES:
        return {"license": _HUB_LICENCES[key]}
    if key.startswith("gemma"):
        return {"license": "gemma"}
    return {"license": "other", "license_name": licence}


def _base_facts(base: dict[str, Any]) -> dict[str, Any]:
    """The base model's name, hub id and licence from its record and the model catalogue."""
    from alignx.model.model_catalogue import catalogue_entry  # the catalogue names the hub id and licence

    spec = base.get("spec") or ""
    if not spec:  # the bootstrap stage: a model trained from scratch on the run's data
        return {"name": "A model trained from scratch (bootstrap stage)", "hub_id": None, "licence": None}
    entry = catalogue_entry(spec)
    if entry is not None:
        return {"name": entry.name, "hub_id": entry.hub_id or entry.name, "licence": entry.licence}
    licence = base.get("licence")
    card = Path(spec) / CARD_FILE
    if not licence and card.is_file():  # a local folder with its own card: inherit its licence
        licence = read_card(card)[0].get("license")
    return {"name": Path(spec).name if Path(spec).is_dir() else spec, "hub_id": spec, "licence": licence}


def read_card(path: Path) -> tuple[dict[str, Any], str]:
    """(YAML header, body) of a card; raises naming the file when the header is missing or not a mapping."""
    text = Path(path).read_text(encoding="utf-8")
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        raise CardError(f"{path}: expected a model card starting with a '---' YAML header closed by '---'")
    head, body = text[4:].split("\n---\n", 1)
    meta = yaml.safe_load(head)
    if not isinstance(meta, dict):
        raise CardError(f"{path}: the YAML header is not a mapping")
    return meta, body


def find_evaluations(model_dir: Path, run_root: Path | None = None) -> list[Path]:
    """The evaluation folders under ``<run root>/eval`` whose ``metrics.json`` names this model folder
    (the run root defaults to the folder's grandparent: ``<run root>/models/<model>``)."""
    model_dir = Path(model_dir).resolve()
    root = Path(run_root) if run_root is not None else model_dir.parent.parent
    found = []
    for metrics in sorted((root / "eval").glob(f"*/{METRICS_FILE}")):
        try:
            doc = json.loads(metrics.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # another run's half-written or foreign file is not this model's evaluation
        path = (doc.get("model") or {}).get("path")
        if path and Path(path).resolve() == model_dir:
            found.append(metrics.parent)
    return found


def _item_values(eval_dir: Path, task: str, metric: str, position: int | None) -> list[float]:
    """Per-item values of one metric (an alignment item holds one value per layer: the one at ``position``)."""
    path = eval_dir / ITEMS_DIR / f"{task}.jsonl"
    if not path.is_file():
        return []
    values = []
    for _, row in iter_jsonl(path):
        value = row.get(metric) if isinstance(row, dict) else None
        if isinstance(value, list) and position is not None and position < len(value):
            value = value[position]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values.append(float(value))
    return values


def evaluation_metrics(eval_dir: Path, resamples: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """One row per (task, metric) of an evaluation: value, its 95% bootstrap interval over the task's items
    (None for corpus-level metrics), item count, group and label."""
    path = Path(eval_dir) / METRICS_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CardError(f"{path}: expected the metrics.json an evaluation writes ({exc})") from None
    layers, layer = doc.get("alignment_layers") or [], doc.get("alignment_layer")
    position = layers.index(layer) if layer in layers else None
    rows = []
    for task, metrics in sorted((doc.get("results") or {}).items()):
        info = (doc.get("tasks") or {}).get(task, {})
        for metric, value in sorted(metrics.items()):
            if not isinstance(value, (int, float)) or metric not in _METRIC_NAMES:
                continue
            items = [] if metric in _CORPUS_METRICS else _item_values(Path(eval_dir), task, metric, position)
            lo = hi = None
            if len(items) > 1:
                _, lo, hi = paired_bootstrap(items, np.zeros(len(items)), resamples, seed)
            rows.append({"task": task, "group": info.get("group", task), "label": info.get("label", ""),
                         "metric": metric, "value": float(value), "lo": lo, "hi": hi,
                         "n": (doc.get("n-samples") or {}).get(task, len(items) or None)})
    return rows


def _model_index(name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = []
    for task in sorted({r["task"] for r in rows}):
        mine = [r for r in rows if r["task"] == task]
        kind, dataset = next((v for k, v in _TASKS.items() if task.startswith(k)), ("text-generation", task))
        metrics = []
        for r in mine:
            interval = "" if r["lo"] is None else f", 95% CI [{r['lo']:.4g}, {r['hi']:.4g}]"
            metrics.append({"type": r["metric"], "value": round(r["value"], 4),
                            "name": f"{_METRIC_NAMES[r['metric']]}{interval}"})
        results.append({"task": {"type": kind}, "dataset": {"name": task, "type": dataset,
                                                            "config": mine[0]["label"] or task},
                        "metrics": metrics})
    return [{"name": name, "results": results}] if results else []


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def build_card(model_dir: Path, evaluations: list[Path] | None = None, name: str | None = None) -> str:
    """The model card of a trained model folder, with the metrics of the given evaluation folders
    (``name``: the folder's final name, when the card is written inside its temporary directory)."""
    model_dir = Path(model_dir)
    name = name or model_dir.name
    lineage = base_lineage(model_dir)
    record = lineage[0] if len(lineage) > 1 else {}
    if not record:
        raise CardError(f"{model_dir}: expected a model folder a training stage wrote ({RUN_RECORD} beside "
                        "the weights); found none")
    base = _base_facts(lineage[-1])
    stages = [r.get("stage", "?") for r in reversed(lineage[:-1])]
    arm = "control" if any(r.get("control") for r in lineage[:-1]) else (
        "alignx" if "stage1" in stages else "sft")
    sources = record.get("data_sources") or []
    profile = record.get("profile")
    datasets = sorted({_source_hub_id(s) for s in sources} - {None})
    rows = [dict(r, eval_dir=str(e)) for e in (evaluations or []) for r in evaluation_metrics(e)]
    header: dict[str, Any] = {
        **({"base_model": base["hub_id"]} if base["hub_id"] else {}),
        "language": list(record.get("languages") or []),
        **_hub_licence(base["licence"]),
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": list(dict.fromkeys(["alignx", "multilingual", arm, *stages])),
    }
    if datasets:
        header["datasets"] = datasets
    index = _model_index(name, rows)
    if index:
        header["model-index"] = index
    final = record.get("final") or {}
    lines = [f"# {name}", "",
             f"{base['name']} after {' then '.join(stages)} of the AlignX pipeline, arm **{arm}**"
             + (f" (profile `{profile}`)" if profile else "") + ".", ""]
    lines += ["## How it was made", "",
              "| stage | steps | examples | final losses |", "|---|---|---|---|"]
    for r in reversed(lineage[:-1]):
        losses = ", ".join(f"{k} {v:.4f}" for k, v in sorted((r.get("final") or {}).items()) if isinstance(v, float))
        lines.append(f"| {r.get('stage', '?')}{' (control: λ=0)' if r.get('control') else ''} | "
                     f"{r.get('steps', '?')} | {r.get('examples', '?')} | {losses} |")
    lines += ["", f"Languages: {', '.join(record.get('languages') or []) or 'not recorded'}. "
              f"Align layer (hidden_states index): {record.get('align_layer', 'n/a')}. "
              f"Data: {', '.join(sources) or 'not recorded'}. Final loss of this stage: "
              f"{_fmt(final.get('loss')) or 'n/a'}.", ""]
    lines += ["## Evaluation", ""]
    if rows:
        lines += ["95% intervals are percentile bootstrap over the items (1000 resamples); corpus-level "
                  "chrF++ and BLEU have none.", "",
                  "| task | metric | value | 95% interval | items |", "|---|---|---|---|---|"]
        for r in rows:
            interval = "" if r["lo"] is None else f"[{_fmt(r['lo'])}, {_fmt(r['hi'])}]"
            lines.append(f"| {r['task']} | {_METRIC_NAMES[r['metric']]} | {_fmt(r['value'])} | {interval} | {r['n'] or ''} |")
    else:
        lines.append("Not evaluated yet: `alignx card --model DIR` rebuilds this card with the metrics of the "
                     "run's evaluations of this folder.")
    lines += ["", "## Licence", ""]
    if base["hub_id"]:
        lines.append(f"Inherited from the base model {base['hub_id']}: {base['licence'] or 'unknown, see the base model'}.")
    else:
        lines.append("No base model: the weights come from the run's data alone; see the data sets' licences.")
    lines.append("")
    return "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n" + "\n".join(lines)


def _source_hub_id(name: str) -> str | None:
    from alignx.data.source_catalogue import source_hub_id

    return source_hub_id(name)


def write_card(model_dir: Path, name: str | None = None) -> Path:
    """Write ``README.md`` (no metrics yet) into a model folder being written, inside its temporary directory."""
    path = Path(model_dir) / CARD_FILE
    path.write_text(build_card(model_dir, name=name), encoding="utf-8")
    return path
