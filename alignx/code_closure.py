"""The repository code a stage runs, derived from the import graph: the code half of every cache key.

Starting from entry modules, every ``import`` of a repository module is followed, at any depth of the
file (function-level imports too, so a lazily imported module counts), together with the packages
whose ``__init__`` an import executes. Repository data files the code names as ``REPO_ROOT / "a" /
"b"`` (catalogues such as ``data/models.yaml``) are part of it. A module reached only by name (the
worker's stage table, ``STAGE_ENTRIES``) enters through the stage that names it, so one stage's key
never covers another stage's code.
"""

from __future__ import annotations

import ast
import hashlib
import threading
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from alignx.artefacts import file_digest

REPO_ROOT = Path(__file__).resolve().parent.parent


@lru_cache(maxsize=65536)
def module_file(name: str, root: Path = REPO_ROOT) -> Path | None:
    """The file of a dotted module name inside the repository (None for anything else; memoised: a
    module file that appears while the process runs is not seen by it)."""
    if not _is_repo_package(root, name.partition(".")[0]):
        return None  # torch, transformers, ...: not ours
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=256)
def _is_repo_package(root: Path, top: str) -> bool:
    return bool(top) and ((root / top / "__init__.py").is_file() or (root / f"{top}.py").is_file())


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)  # a submodule, or a name in it
    return names


def _data_files(tree: ast.AST, root: Path) -> set[Path]:
    """Files named as ``REPO_ROOT / "x" / "y.yaml"`` in the module (folders and missing files skipped)."""
    found: set[Path] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.BinOp) or not isinstance(node.op, ast.Div):
            continue
        parts: list[str] = []
        cur: ast.AST = node
        while isinstance(cur, ast.BinOp) and isinstance(cur.op, ast.Div) and isinstance(cur.right, ast.Constant) \
                and isinstance(cur.right.value, str):
            parts.insert(0, cur.right.value)
            cur = cur.left
        if isinstance(cur, ast.Name) and cur.id == "REPO_ROOT" and parts:
            path = root.joinpath(*parts)
            if path.is_file():
                found.add(path)
    return found


def _links(path: Path, module: str, root: Path) -> tuple[frozenset[str], frozenset[Path]]:
    """The module names a file imports and the data files it names (memoised on its size and mtime)."""
    stat = path.stat()
    return _links_of_version(path, module, root, stat.st_mtime_ns, stat.st_size)


# The AST constructor of CPython 3.11 (3.11.7 here) is not safe across threads: two tasks computing their
# keys at once in a flow's threads failed with "SystemError: AST constructor recursion depth mismatch"
# (tests/flows/test_data_flow.py, once in a full run), and the task's result was then not persisted.
# One parse at a time.
_PARSE_LOCK = threading.Lock()


@lru_cache(maxsize=4096)
def _links_of_version(path: Path, module: str, root: Path, mtime_ns: int, size: int
                      ) -> tuple[frozenset[str], frozenset[Path]]:
    source = path.read_bytes()
    with _PARSE_LOCK:
        tree = ast.parse(source, filename=str(path))
    return frozenset(_imported_names(tree, module, path.name == "__init__.py")), frozenset(_data_files(tree, root))


def closure(entries: Iterable[str], root: Path = REPO_ROOT) -> list[Path]:
    """Every repository file the entry modules run or read, transitively, sorted."""
    seen: set[str] = set()
    files: set[Path] = set()
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name, root)
        if path is None:
            continue
        files.add(path)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages' __init__ run first
        imported, data_files = _links(path, name, root)
        todo.extend(imported)
        files.update(data_files)
    return sorted(files)


def code_fingerprint(entries: Iterable[str], root: Path = REPO_ROOT) -> str:
    """Hash of the closure of ``entries``: each file's repository path and content digest."""
    h = hashlib.sha256()
    for path in closure(tuple(entries), root):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(b"\x00")
        h.update(file_digest(path).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]
