"""A task's code key covers every repository module its stage imports, and nothing else.

Each task's key is recomputed over a temporary copy of the tree: changing any module (or catalogue
file) in its import closure changes the key; changing a module outside it leaves the key alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from prefect import Task

from alignx.code_closure import REPO_ROOT, closure, code_fingerprint
from tasks import data as data_tasks
from tasks import evaluate as eval_tasks
from tasks import train as train_tasks
from tasks.caching import code_entries

TASKS: dict[str, Task] = {t.name: t for module in (data_tasks, train_tasks, eval_tasks)
                          for t in vars(module).values() if isinstance(t, Task)}


def _entries(task: Task) -> list[str]:
    return code_entries(task.fn, task.cache_policy.cache_key_fn.stage)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """The repository's code and catalogue files, copied (never the real tree: other tests read it)."""
    root = tmp_path_factory.mktemp("tree")
    for folder in ("alignx", "tasks", "flows"):
        shutil.copytree(REPO_ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "data").mkdir()
    for catalogue in (REPO_ROOT / "data").glob("*.yaml"):
        shutil.copy(catalogue, root / "data" / catalogue.name)
    return root


def _repo_files(root: Path) -> set[Path]:
    return {p for folder in ("alignx", "tasks", "flows") for p in (root / folder).rglob("*.py")} | \
        set((root / "data").glob("*.yaml"))


def test_the_modules_the_issue_found_missing_are_in_the_closures():
    """On f5742a3 a change to alignx_model.py left `evaluate` a cache hit returning old metrics."""
    rel = lambda task: {p.relative_to(REPO_ROOT).as_posix() for p in closure(_entries(TASKS[task]))}  # noqa: E731
    evaluate = rel("evaluate")
    for module in ("alignx/model/alignx_model.py", "alignx/data/langid.py", "alignx/eval/runner.py",
                   "alignx/eval/alignment.py", "alignx/data/instructions.py", "alignx/mirror.py"):
        assert module in evaluate, module
    for task in ("bootstrap", "stage1", "stage2"):
        training = rel(task)
        for module in ("alignx/launch.py", "alignx/train/loop.py", "alignx/train/training_stages.py",
                       "alignx/model/losses.py", "tasks/train.py"):
            assert module in training, (task, module)
        assert "alignx/eval/runner.py" not in training  # the worker names its stages' modules, never imports them
    assert "alignx/train/loop.py" not in evaluate
    assert "data/models.yaml" in rel("prepare-base")  # a catalogue the code reads as REPO_ROOT / "data" / ...
    assert "flows/cli.py" not in evaluate | rel("stage1") | rel("collect")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_module_in_a_tasks_closure_changes_its_key_and_no_other_does(tree, name):
    entries = _entries(TASKS[name])
    inside = set(closure(entries, tree))
    outside = _repo_files(tree) - inside
    assert inside and outside, (name, len(inside), len(outside))
    before = code_fingerprint(entries, tree)
    for path in sorted(_repo_files(tree)):
        saved = path.read_bytes()
        path.write_bytes(saved + b"\n# an edit\n")
        try:
            changed = code_fingerprint(entries, tree) != before
        finally:
            path.write_bytes(saved)
        assert changed == (path in inside), (name, path.relative_to(tree).as_posix(), changed)
    assert code_fingerprint(entries, tree) == before


def test_a_new_import_joins_the_closure(tree):
    """The closure follows the code: a function-level import added to a module pulls its target in."""
    entries = _entries(TASKS["shard"])
    inside = closure(entries, tree)
    target = min(p for p in (tree / "alignx").rglob("*.py") if p not in inside and p.name != "__init__.py")
    module = ".".join(target.relative_to(tree).with_suffix("").parts)
    shards = tree / "alignx" / "data" / "shards.py"
    assert shards in inside
    saved = shards.read_bytes()
    shards.write_bytes(saved + f"\n\ndef _late():\n    import {module}  # noqa: F401\n".encode())
    try:
        assert target in closure(entries, tree)
    finally:
        shards.write_bytes(saved)
