"""Where the public data sets are: the data mirror folder, or the Hugging Face hub when online."""

from __future__ import annotations

import os
from pathlib import Path

from alignx.config import REPO_ROOT

MIRROR_ENV = "ALIGNX_DATA_MIRROR"


class DataUnavailableError(FileNotFoundError):
    """Neither the data mirror nor the hub can provide a data set."""


def resolve_mirror(configured: str | None = None, env: dict[str, str] | None = None) -> Path | None:
    """The data mirror: the configured path, else env ALIGNX_DATA_MIRROR, else ../shared/data if it exists."""
    env = os.environ if env is None else env
    for candidate in (configured, env.get(MIRROR_ENV)):
        if candidate:
            path = Path(candidate)
            return path if path.is_absolute() else (REPO_ROOT / path).resolve()
    default = (REPO_ROOT / ".." / "shared" / "data").resolve()
    return default if default.is_dir() else None


def hub_offline(env: dict[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or env.get(
        "HF_DATASETS_OFFLINE", "0"
    ).lower() in ("1", "true", "yes")


def require_mirror_path(mirror: Path | None, relative: str, hub_hint: str | None = None) -> Path:
    """Path of a data set inside the mirror, or an error that names both ways to provide it."""
    if mirror is not None and (mirror / relative).exists():
        return mirror / relative
    where = f"{mirror / relative}" if mirror is not None else "(no data mirror found)"
    hint = f", or go online so it can be read from the hub ({hub_hint})" if hub_hint else ""
    raise DataUnavailableError(
        f"data set not found at {where}: set {MIRROR_ENV} to a folder holding it "
        f"(the layout of ../shared/data){hint}"
    )
