"""Artefacts on disk: atomic writes, content fingerprints, and the small records stages return.

Every artefact is written under a temporary name and renamed when complete, so a crash never leaves
something a later run could take for good output. A directory artefact carries ``_artefact.json``
with its fingerprint; ``verify_artefact`` recomputes it so a cache never returns a vanished or
altered artefact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

MARKER = "_artefact.json"
_FULL_HASH_LIMIT = 256 * 1024 * 1024  # larger files: size + head/tail hash (model weights)


class Artefact(BaseModel):
    """What a stage returns: where its output is and the fingerprint of its content."""

    kind: str
    path: str
    fingerprint: str
    meta: dict[str, Any] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file (head, tail and size for very large files)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as fh:
        if size <= _FULL_HASH_LIMIT:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(fh.read(8 << 20))
            fh.seek(size - (8 << 20))
            h.update(fh.read(8 << 20))
            h.update(str(size).encode())
    return h.hexdigest()


def tree_fingerprint(path: Path, exclude: tuple[str, ...] = (MARKER,)) -> str:
    """Fingerprint of a file or a directory tree: relative names and contents, order-independent."""
    path = Path(path)
    if path.is_file():
        return file_digest(path)[:16]
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        if rel in exclude or rel.startswith("checkpoints/") or "/." in f"/{rel}":
            continue
        h.update(rel.encode() + b"\x00" + file_digest(file).encode() + b"\x00")
    return h.hexdigest()[:16]


def write_marker(directory: Path, kind: str, meta: dict[str, Any] | None = None) -> Artefact:
    """Fingerprint a finished directory and record it in its marker file."""
    fp = tree_fingerprint(directory)
    record = Artefact(kind=kind, path=str(directory), fingerprint=fp, meta=meta or {})
    atomic_write_text(Path(directory) / MARKER, record.model_dump_json(indent=2))
    return record


def read_marker(directory: Path) -> Artefact | None:
    marker = Path(directory) / MARKER
    if not marker.is_file():
        return None
    try:
        return Artefact.model_validate_json(marker.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return None


def verify_artefact(record: Artefact | dict | None) -> bool:
    """True when the artefact still exists and its content still has the recorded fingerprint."""
    if record is None:
        return False
    if isinstance(record, dict):
        record = Artefact.model_validate(record)
    path = Path(record.path)
    if not path.exists():
        return False
    try:
        return tree_fingerprint(path) == record.fingerprint
    except OSError:
        return False


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success replace ``final`` with it, on error delete it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
