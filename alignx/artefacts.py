"""Artefacts on disk: atomic writes, content fingerprints (files, trees, config values), and the
small records stages return.

Every artefact is written under a temporary name and renamed when complete, so a crash never leaves
something a later run could take for good output. A temporary name carries its writer (host, pid),
so the next writer of the same artefact removes what a dead writer left behind. A directory artefact carries ``_artefact.json``
with its fingerprint; ``verify_artefact`` recomputes it so a cache never returns a vanished or
altered artefact.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from alignx.process_identity import temp_tag, writer_of

log = logging.getLogger(__name__)
MARKER = "_artefact.json"
_FULL_HASH_LIMIT = 256 * 1024 * 1024  # larger files: size + head/tail hash (model weights)


class Artefact(BaseModel):
    """What a stage returns: where its output is and the fingerprint of its content."""

    kind: str
    path: str
    fingerprint: str
    meta: dict[str, Any] = {}


def file_digest(path: Path, whole: bool = False) -> str:
    """SHA-256 of a file: the one file hasher of the library.

    Files over 256 MiB (model weights) hash their first and last 8 MiB and their size, unless ``whole``:
    a pin that must equal a published SHA-256 (the model catalogue's) reads every byte.
    """
    path = Path(path)
    h = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as fh:
        if whole or size <= _FULL_HASH_LIMIT:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(fh.read(8 << 20))
            fh.seek(size - (8 << 20))
            h.update(fh.read(8 << 20))
            h.update(str(size).encode())
    return h.hexdigest()


def fingerprint(*parts: Any) -> str:
    """Stable short hash of config sections (pydantic models), strings and JSON-able values."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, BaseModel):
            part = part.model_dump(mode="json")
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


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


def _temporary_sibling(final: Path, kind: str) -> Path:
    return final.with_name(f".{final.name}.{kind}-{temp_tag()}~{uuid.uuid4().hex[:8]}")


def temporary_path(final: Path) -> Path:
    """A temporary sibling of ``final`` tagged with this writer: if the writer dies, the next writer of
    ``final`` (``atomic_dir``, ``atomic_file``, ``remove_dead_temporaries``) removes it."""
    return _temporary_sibling(Path(final), "tmp")


def remove_dead_temporaries(final: Path) -> list[Path]:
    """Remove the temporary siblings of ``final`` (``.<name>.tmp-*``, ``.<name>.old-*``) whose writer died.

    Only writers on this host can be proven dead; a live writer's (another run's) files stay.
    """
    final = Path(final)
    removed = []
    if not final.parent.is_dir():
        return removed
    for kind in ("tmp", "old"):
        prefix = f".{final.name}.{kind}-"
        for leftover in final.parent.glob(f"{glob.escape(prefix)}*"):
            writer = writer_of(leftover.name[len(prefix):].rsplit("~", 1)[0])
            if writer is None or not writer.is_dead():
                continue
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
            log.warning("removed %s, left behind by a writer that died (%s)", leftover, writer.describe())
            removed.append(leftover)
    return removed


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path to write; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(path)
    tmp = _temporary_sibling(path, "tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success replace ``final`` with it, on error delete it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(final)
    tmp = _temporary_sibling(final, "tmp")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, final)


def replace_dir(tmp: Path, final: Path) -> None:
    """Put the finished directory ``tmp`` in the place of ``final`` (moving any old one aside first)."""
    final = Path(final)
    if final.exists():
        trash = _temporary_sibling(final, "old")
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
