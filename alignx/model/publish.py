"""Publish a trained model folder to the Hugging Face hub, with its card rebuilt from the run's evaluations.

One commit holds the weights, the tokenizer, the run record, the training log and ``README.md``; the
folder's marker (a path on this machine) stays behind. Offline (``HF_HUB_OFFLINE``) or without a token,
nothing is attempted and the error says what to do.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from alignx.artefacts import MARKER, read_marker
from alignx.model.model_card import CARD_FILE, build_card, find_evaluations
from alignx.training_records import RUN_RECORD

_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_LEFT_BEHIND = {MARKER}  # the marker records this machine's paths; the card is rebuilt


class PublishError(RuntimeError):
    """Publishing cannot start: says why in one line and what to do."""


def _offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "")
    return constants.HF_HUB_OFFLINE or flag.strip().lower() in {"1", "true", "yes", "on"}


def check_publishable(model_dir: Path, repo: str) -> None:
    """Every reason publishing cannot start, before anything is read from or sent to the hub."""
    model_dir = Path(model_dir)
    if not _REPO.match(repo):
        raise PublishError(f"--repo {repo!r}: expected owner/name (letters, digits, '-', '_', '.')")
    if not (model_dir / RUN_RECORD).is_file() or read_marker(model_dir) is None:
        raise PublishError(f"{model_dir}: expected a finished model folder a training stage wrote "
                           f"({RUN_RECORD} and {MARKER}); found none")
    if _offline():
        raise PublishError(f"offline (HF_HUB_OFFLINE is set): cannot push {model_dir.name} to {repo}; "
                           "unset HF_HUB_OFFLINE and log in (huggingface-cli login, or HF_TOKEN) to publish")


def publish(model_dir: Path, repo: str, evaluations: list[Path] | None = None, private: bool = True,
            run_root: Path | None = None) -> str:
    """Push the folder and its card (metrics from ``evaluations``, default: the run root's evaluations of
    this folder) to ``repo`` in one commit; returns the commit's URL."""
    check_publishable(model_dir, repo)
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    if get_token() is None:
        raise PublishError("no Hugging Face token: run `huggingface-cli login` or set HF_TOKEN, then publish again")
    model_dir = Path(model_dir)
    evals = find_evaluations(model_dir, run_root) if evaluations is None else evaluations
    card = build_card(model_dir, evals).encode("utf-8")
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and p.name not in _LEFT_BEHIND
                   and p.relative_to(model_dir).as_posix() != CARD_FILE)
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(model_dir).as_posix(), path_or_fileobj=str(p))
                  for p in files]
    operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card))
    api = HfApi()
    api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
    info = api.create_commit(repo, operations, commit_message=f"AlignX: {model_dir.name}", repo_type="model")
    return info.commit_url
