"""Data-parallel evaluation: two launched processes (gloo) split the scoring, generation and pooling,
and write the same metrics and per-item rows as one process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alignx.artefacts import verify_artefact
from alignx.launch import launch

from .conftest import eval_config


def _items(path: Path) -> dict[str, list[dict]]:
    return {p.stem: [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()]
            for p in sorted((path / "items").glob("*.jsonl"))}


def _close(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert np.isclose(a, b, rtol=1e-4, atol=1e-5), f"{where}: {a} vs {b}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


@pytest.mark.timeout(600)
def test_two_processes_give_one_process_results(tmp_path, tiny_lm_dir, eval_fixtures, evaluated):
    one = Path(evaluated[0].path)
    cfg = eval_config(tmp_path, eval_fixtures)
    progress: list[int] = []
    art = launch("evaluate", {"model": str(tiny_lm_dir), "out": str(tmp_path / "out")}, cfg, 2,
                 progress=lambda done, total, desc: progress.append(done))
    two = Path(art.path)
    assert verify_artefact(art) and progress and progress[-1] == evaluated[1][-1][0]  # the same total of work
    a, b = json.loads((one / "metrics.json").read_text()), json.loads((two / "metrics.json").read_text())
    for key in ("results", "groups", "alignment", "n-samples"):
        _close(a[key], b[key], key)
    items_one, items_two = _items(one), _items(two)
    assert items_one.keys() == items_two.keys() and any(k.startswith("flores") for k in items_one)
    for task in items_one:  # every item: the same prediction, log-likelihoods and generated text
        _close(items_one[task], items_two[task], task)
