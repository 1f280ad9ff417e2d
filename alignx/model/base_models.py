"""Real pretrained base models: what a spec names (a catalogue name, a GGUF file, a local Hugging Face
directory or a hub id), what it depends on, and its checkpoint directory prepared once.

``prepare_base_model`` turns any of them into an ordinary checkpoint directory (safetensors + tokenizer)
recorded as an artefact: a GGUF file is dequantised once (``alignx.model.gguf_conversion``), keyed by
its SHA-256 and the dtype; a hub id is downloaded once at the commit it resolves to. ``base_model_depth``
reads the number of decoder layers without loading weights (to resolve ``align_layer: middle`` and
check it before any work).
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from alignx.artefacts import Artefact, file_digest, read_marker, tree_fingerprint, verify_artefact, write_marker
from alignx.model.gguf_conversion import convert_gguf, read_gguf_header
from alignx.model.hub_models import download_snapshot, resolve_commit
from alignx.model.model_catalogue import (
    BaseModelError, CatalogueEntry, check_installed, known_names, load_catalogue, verified_catalogue_file,
)
from alignx.progress import Progress

DTYPES = ("float32", "bfloat16", "float16")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?")


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
                             f"Face model directory, a hub id (owner/name) or a catalogue name "
                             f"({known_names(catalogue)})")
    if spec in catalogue:
        return "catalogue", catalogue[spec]
    if _HUB_ID.fullmatch(spec) and not spec.startswith("."):
        repo_id, _, revision = spec.partition("@")
        return "hub", (repo_id, revision or None)
    raise BaseModelError(f"unknown base model {spec!r}: not a catalogue name (known: {known_names(catalogue)}), "
                         "an existing directory or .gguf file, nor a hub id (owner/name)")


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
        check_installed(target)
    elif kind == "gguf":
        read_gguf_header(target)
    elif kind == "dir":
        _config_depth(target)
    elif hub_offline():
        raise BaseModelError(f"hub model {spec!r} cannot be fetched while HF_HUB_OFFLINE is set: give a local "
                             f"directory, a .gguf file or a catalogue name ({known_names(load_catalogue())})")


# ---------------------------------------------------------------- prepare
def base_model_fingerprint(spec: str) -> str:
    """What a prepared base model depends on, for cache keys: content, never a path or name alone.

    Catalogue: its pinned SHA-256 (the file is checked against it when used); GGUF: the file's
    SHA-256; directory: its content fingerprint; hub id: the commit it resolves to (online).
    """
    kind, target = classify(spec)
    if kind == "catalogue":
        return f"{target.name}:{target.sha256}"
    if kind == "gguf":
        return file_digest(target, whole=True)
    if kind == "dir":
        return tree_fingerprint(target)
    return resolve_commit(*target, spec=spec)


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
    sha = file_digest(target, whole=True)
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
    commit = resolve_commit(repo_id, revision, spec)
    out = out_root / f"base-{repo_id.replace('/', '--')}-{commit[:12]}"
    cached = _cached(out)
    if cached:
        return cached
    download_snapshot(repo_id, commit, out)
    _given_directory(out, spec)
    return write_marker(out, "model", {"source": "hub", "spec": spec, "repo_id": repo_id, "revision": commit,
                                       "num_layers": _config_depth(out)})
