"""Base models on the Hugging Face hub: the commit an id resolves to, and that snapshot downloaded."""

from __future__ import annotations

from pathlib import Path

from alignx.artefacts import atomic_dir
from alignx.model.model_catalogue import BaseModelError, known_names, load_catalogue

# what a causal LM checkpoint needs: config, weights, tokenizer, chat template
SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]


def resolve_commit(repo_id: str, revision: str | None, spec: str) -> str:
    """The commit ``repo_id`` at ``revision`` (default branch when None) resolves to; online only."""
    from huggingface_hub import HfApi

    try:
        return HfApi().model_info(repo_id, revision=revision).sha
    except Exception as exc:  # offline mode, no network, unknown repo or revision
        raise BaseModelError(
            f"base model {spec!r} looks like a hub id but cannot be resolved ({type(exc).__name__}: {exc}). "
            f"Offline, download it to a directory and give its path, or use a catalogue name "
            f"({known_names(load_catalogue())}); if it was meant as a local path, that path does not exist") from None


def download_snapshot(repo_id: str, commit: str, out: Path) -> None:
    """The checkpoint files of ``repo_id`` at ``commit`` into ``out``, atomically."""
    from huggingface_hub import snapshot_download

    with atomic_dir(out) as tmp:
        snapshot_download(repo_id, revision=commit, local_dir=tmp, allow_patterns=SNAPSHOT_PATTERNS)
