"""Opening one split of a Hugging Face data set: a local copy first, then the hub.

A local copy is a folder saved with ``save_to_disk`` (a Dataset or a DatasetDict) or a folder of data
files that ``datasets.load_dataset`` reads (JSON / Parquet / CSV). Offline, or when the hub fails, the
error names both ways to provide the data.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alignx.mirror import MIRROR_ENV, DataUnavailableError, hub_offline

log = logging.getLogger(__name__)

_DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".arrow")


def _is_dataset_dir(path: Path) -> bool:
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return True
    return any(p.suffix in _DATA_SUFFIXES for p in path.rglob("*") if p.is_file())


def local_copy(roots: list[Path], config: str | None) -> Path | None:
    """The first ``<root>/<config>`` (or ``<root>`` itself) that holds a data set, if any."""
    for root in roots:
        if config and (root / config).is_dir() and _is_dataset_dir(root / config):
            return root / config
        if root.is_dir() and not config and _is_dataset_dir(root):
            return root
    return None


def _load_local(path: Path, split: str) -> Any:
    import datasets

    if (path / "dataset_dict.json").is_file():
        return datasets.load_from_disk(str(path))[split]
    if (path / "state.json").is_file():
        return datasets.load_from_disk(str(path))
    return datasets.load_dataset(str(path), split=split)


def dataset_revision(hub_id: str, revision: str | None = None) -> str:
    """The commit a hub data set (at ``revision``: a branch, tag or commit; None: the default branch)
    resolves to, for cache keys: a changed data set under the same id is a new key. Offline there is
    nothing to resolve: "offline:<revision>" (reading it will then fail unless a local copy exists)."""
    if hub_offline():
        return f"offline:{revision or 'main'}"
    from huggingface_hub import HfApi

    try:
        return HfApi().dataset_info(hub_id, revision=revision).sha or f"unresolved:{revision or 'main'}"
    except Exception as exc:  # network, auth, unknown id or revision: say which
        raise DataUnavailableError(f"hub data set {hub_id} (revision {revision or 'main'!r}) cannot be resolved "
                                   f"to a commit: {exc}") from exc


def open_split(source: str, hub_id: str, config: str | None, split: str, roots: list[Path],
               missing: Path | None = None, revision: str | None = None) -> Any:
    """A ``datasets`` Dataset (local copy) or streaming IterableDataset (hub) for one config and split.

    Raises ``DataUnavailableError`` naming both the local path it looked for and the hub id when
    neither can provide the data; ``missing`` is a mirror folder that was looked for first.
    """
    local = local_copy(roots, config)
    if local is not None:
        log.info("source %s: reading local copy %s (split %s)", source, local, split)
        return _load_local(local, split)
    if hub_offline():
        raise _unavailable(source, hub_id, config, split, roots, missing, "the hub is offline (HF_HUB_OFFLINE is set)")
    import datasets

    try:
        return datasets.load_dataset(hub_id, config, split=split, streaming=True, revision=revision)
    except Exception as exc:  # any hub failure (network, auth, missing config) means: not reachable
        raise _unavailable(source, hub_id, config, split, roots, missing, f"the hub failed ({exc})") from exc


def _unavailable(source: str, hub_id: str, config: str | None, split: str, roots: list[Path],
                 missing: Path | None, why: str) -> DataUnavailableError:
    sub = f"/{config}" if config else ""
    looked = ", ".join([str(missing)] * (missing is not None) + [f"{r}{sub}" for r in roots]) or "(no data mirror found)"
    return DataUnavailableError(
        f"source {source!r}: {hub_id} (config {config!r}, split {split!r}) is not available. "
        f"No local copy at {looked}: set {MIRROR_ENV} (or data_mirror) to a folder holding it, saved with "
        f"datasets' save_to_disk or as data files. And {why}: go online (unset HF_HUB_OFFLINE) to read "
        f"{hub_id} from the Hugging Face hub."
    )
