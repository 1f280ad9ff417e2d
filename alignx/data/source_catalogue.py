"""The source catalogue (``data/sources.yaml``): every entry validated, a source opened by name, and
the fingerprint of what a source would read.

An entry's ``kind`` picks its reader (``alignx.data.readers.READERS``); a mirror set missing from the
data mirror falls back to the entry's ``hub:`` block.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml
from pydantic import ValidationError

from alignx.artefacts import file_digest, fingerprint
from alignx.config import REPO_ROOT, ConfigError
from alignx.data import hub
from alignx.data.readers import READERS
from alignx.data.readers.hub_dataset import HubReader
from alignx.data.readers.pair_reader import PairReader, ReaderParams
from alignx.data.readers.table import TableReader
from alignx.mirror import MIRROR_ENV, DataUnavailableError

log = logging.getLogger(__name__)

SOURCES_FILE = REPO_ROOT / "data" / "sources.yaml"


def load_catalogue(path: Path = SOURCES_FILE) -> dict[str, tuple[type[PairReader], ReaderParams]]:
    """Read and validate every entry of the source catalogue; all problems are reported at once."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(str(path), [f"cannot read the source catalogue: {exc}"]) from None
    problems, out = [], {}
    for name, entry in raw.items():
        entry = dict(entry or {})
        kind = entry.pop("kind", None)
        if kind not in READERS:
            problems.append(f"{name}: unknown kind {kind!r}; known kinds: {', '.join(sorted(READERS))}")
            continue
        try:
            out[name] = (READERS[kind], READERS[kind].Params.model_validate(entry))
        except ValidationError as exc:
            problems += [f"{name}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    if problems:
        raise ConfigError(str(path), problems)
    return out


def source_hub_id(name: str, catalogue: Path = SOURCES_FILE) -> str | None:
    """The hub data set a catalogue source reads or falls back to (None: a mirror-only set, or no such source)."""
    entry = load_catalogue(catalogue).get(name)
    if entry is None:
        return None
    reader, params = entry
    hub_params = getattr(params, "hub", None)
    if hub_params is not None:
        return hub_params.path
    return params.path if reader.__name__ == "HubReader" else None


def open_source(name: str, mirror: Path | None, catalogue: Path = SOURCES_FILE) -> PairReader:
    """The reader of one catalogue source; a mirror set missing from the mirror falls back to its hub entry."""
    entries = load_catalogue(catalogue)
    if name not in entries:
        raise ConfigError(str(catalogue), [f"unknown source {name!r}; known sources: {', '.join(sorted(entries))}"])
    cls, params = entries[name]
    reader = cls(name, params, mirror)
    if cls in (HubReader, TableReader):
        return reader  # they name their own missing files / unreachable hub
    root = reader.local(params.path)
    if (mirror is not None or root.is_absolute()) and root.is_dir():
        return reader
    hub_params = getattr(params, "hub", None)
    if hub_params is not None:
        # The hub reader uses a local copy of the hub set if there is one, else the hub; when neither
        # works its error names this mirror folder too.
        log.info("source %s: %s is not in the data mirror; reading %s instead", name, root, hub_params.path)
        return HubReader(name, hub_params, mirror, missing=root)
    raise DataUnavailableError(
        f"source {name!r}: {root if mirror is not None else params.path + ' (no data mirror found)'} does not exist: "
        f"set {MIRROR_ENV} (or data_mirror) to a folder with the layout of ../shared/data; or give {name!r} a "
        f"hub: block in {catalogue} to read it from the Hugging Face hub"
    )


def source_inputs_fingerprint(reader: PairReader, pairs: list[tuple[str, str]]) -> str:
    """Fingerprint of what a source would read for these pairs: its entry and its files' contents."""
    parts: list[object] = [reader.kind, reader.params.model_dump(mode="json")]
    for src, tgt in pairs:
        for path in reader.files(src, tgt):
            parts.append([str(path.name), file_digest(path) if path.is_file() else "missing"])
    if isinstance(reader, HubReader) and not any(reader.files(s, t) for s, t in pairs):
        # read from the hub: the commit the data set resolves to keys it (a changed set is a new key)
        parts.append(["hub", hub.dataset_revision(reader.params.path, reader.params.revision)])
    return fingerprint(*parts)
