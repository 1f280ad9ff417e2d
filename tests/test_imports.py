"""The library's import shape, read statically from every file (imports inside functions included):
alignx never imports Prefect or the orchestration around it, and config imports nothing that imports it."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ORCHESTRATION = ("prefect", "flows", "tasks")


def _module_name(file: Path) -> str:
    parts = file.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(file: Path) -> set[str]:
    """Every module a file imports, at any depth of the file; ``from a import b`` gives ``a.b`` too
    (b may be a module: whoever asks keeps the names it knows)."""
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    package = _module_name(file) if file.name == "__init__.py" else _module_name(file).rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def library_graph() -> dict[str, set[str]]:
    """alignx module -> the alignx modules importing it runs: those it names and their packages' __init__."""
    files = {_module_name(f): f for f in sorted((REPO / "alignx").rglob("*.py"))}
    graph = {}
    for name, file in files.items():
        edges = set()
        for imported in imported_modules(file) & set(files):
            parts = imported.split(".")
            edges.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))
        graph[name] = (edges & set(files)) - {name}
    return graph


def test_the_library_never_imports_prefect_flows_or_tasks():
    found = {}
    for file in sorted((REPO / "alignx").rglob("*.py")):
        bad = sorted(m for m in imported_modules(file) if m.split(".")[0] in ORCHESTRATION)
        if bad:
            found[str(file.relative_to(REPO))] = bad
    assert not found, f"alignx/ imports orchestration code (Prefect, flows/, tasks/): {found}"


def test_the_reader_finds_imports_inside_functions():
    file = REPO / "alignx" / "preflight.py"  # imports the library's stages inside its checks only
    assert {"alignx.model.base_models", "alignx.eval.evaluation_plan"} <= imported_modules(file)


def test_config_is_on_no_import_cycle():
    """config imports no alignx module that imports config, directly or through others, at any depth of a
    file; it never reaches the model code (base models, GGUF headers, the model catalogue)."""
    graph = library_graph()
    reached, todo = set(), ["alignx.config"]
    while todo:
        for imported in graph[todo.pop()]:
            if imported not in reached:
                reached.add(imported)
                todo.append(imported)
    assert "alignx.config" not in reached, f"alignx.config imports itself through {sorted(reached)}"
    assert not any(m.startswith("alignx.model") for m in reached), sorted(reached)
