"""Cache keys and cache verification shared by every AlignX task (retry policies: ``tasks.retries``).

A task's cache key is its own source + a hash of the code it runs (the import closure of its module and
of its stage's entry, alignx.code_closure) + the config sections it reads + the content of the files
those sections name + the fingerprints of its input artefacts (never a pickle of data, never INPUTS
alone). A task's output folder is named by the same key (``output_key``).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prefect.cache_policies import CacheKeyFnPolicy
from prefect.context import TaskRunContext
from prefect.transactions import IsolationLevel

from alignx.artefacts import Artefact, file_digest, fingerprint, verify_artefact
from alignx.code_closure import code_fingerprint
from alignx.config import REPO_ROOT, PipelineConfig
from alignx.data.general_instructions import instruction_sources_fingerprint
from alignx.train.worker import STAGE_ENTRIES
from tasks.locks import HolderAwareLockManager

logger = logging.getLogger(__name__)

# A task's lock lives in its run root's ``locks/`` (shared by every process that works on that run
# root); ALIGNX_LOCK_DIR, when set, puts every lock in one directory instead.
LOCK_DIR_FIXED = os.environ.get("ALIGNX_LOCK_DIR")
LOCK_DIR = Path(LOCK_DIR_FIXED or REPO_ROOT / "data" / "cache" / "locks")  # keys without a config
# A lock whose holder runs on another host is broken when its heartbeat is older than this.
LOCK_STALE_AFTER_S = float(os.environ.get("ALIGNX_LOCK_STALE_SECONDS", "300"))
LOCK_MANAGER = HolderAwareLockManager(LOCK_DIR, stale_after_s=LOCK_STALE_AFTER_S)
def config_part(cfg: PipelineConfig, dotted: str) -> Any:
    """The value of a dotted config path (``data.filters``), as JSON-able data."""
    node: Any = cfg
    for name in dotted.split("."):
        node = getattr(node, name)
    return node.model_dump(mode="json") if hasattr(node, "model_dump") else node


# Config fields that name data a stage reads: the data can change under the same name (a file's bytes,
# a hub set's commit), so a section holding one is keyed on the content too (benchmark files:
# runner.benchmark_fingerprint).
CONTENT_FIELDS: dict[str, Callable[[PipelineConfig], str | None]] = {
    "data.langid.model_path": lambda cfg: _content(cfg.data.langid.model_path),
    "stage2.general": lambda cfg: instruction_sources_fingerprint(cfg.stage2.general) if cfg.stage2.general else None,
}
_digest_cache: dict[tuple[str, int, int], str] = {}


def _content(path: str | None) -> str | None:
    """A file's content digest (memoised on path, size and mtime); a missing file enters by name."""
    if path is None or not Path(path).is_file():
        return path
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digest_cache:
        _digest_cache[key] = file_digest(Path(path))
    return _digest_cache[key]


def content_fingerprints(cfg: PipelineConfig, sections: Iterable[str]) -> dict[str, str | None]:
    """What the data named by ``CONTENT_FIELDS`` inside the given config sections holds."""
    sections = tuple(sections)
    return {name: content(cfg) for name, content in CONTENT_FIELDS.items()
            if any(name == s or name.startswith(f"{s}.") for s in sections)}


def _param_part(value: Any, sections: tuple[str, ...]) -> Any:
    if isinstance(value, Artefact):
        return value.fingerprint
    if isinstance(value, PipelineConfig):
        parts = {s: config_part(value, s) for s in sections}
        parts["run_root"] = str(value.resolved_run_root())
        files = content_fingerprints(value, sections)
        if files:  # only where a section names files: other tasks keep their keys
            parts["files"] = files
        return parts
    if isinstance(value, (list, tuple)):
        return [_param_part(v, sections) for v in value]
    if isinstance(value, dict):
        return {k: _param_part(v, sections) for k, v in sorted(value.items())}
    if isinstance(value, Path):
        return str(value)
    return value


def code_entries(fn: Callable[..., Any], stage: str | None = None) -> list[str]:
    """Where a task's code starts: its own module and, for a launched stage, the library module the
    worker runs it from (``STAGE_ENTRIES``). The key covers their import closure, derived, never listed."""
    return [fn.__module__] + ([STAGE_ENTRIES[stage]] if stage else [])


def stage_cache(sections: Iterable[str], stage: str | None = None) -> CacheKeyFnPolicy:
    """A cache policy keyed on task source + the code it runs (its import closure) + config sections
    (and the content of the files they name) + input fingerprints.

    ``stage`` names the launched stage (``alignx.train.worker.STAGE_ENTRIES``) whose code the task
    runs by name. SERIALIZABLE isolation with a file lock manager: two runs computing the same key wait
    for each other instead of writing the same artefact twice, and a lock whose holder died is broken.
    """
    sections = tuple(sections)
    if stage is not None and stage not in STAGE_ENTRIES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGE_ENTRIES)}")

    def key_fn(context: Any, parameters: dict[str, Any]) -> str:
        fn = context.task.fn
        bound = inspect.signature(fn).bind_partial(**parameters)
        bound.apply_defaults()  # a parameter left at its default keys the same as one passed explicitly
        parts = {k: _param_part(v, sections) for k, v in sorted(bound.arguments.items()) if k != "progress"}
        key = f"alignx-{context.task.name}-" + fingerprint(inspect.getsource(fn), code_fingerprint(code_entries(fn, stage)), parts)
        cfg = next((v for v in parameters.values() if isinstance(v, PipelineConfig)), None)
        if cfg is not None and not LOCK_DIR_FIXED:
            LOCK_MANAGER.route(key, cfg.resolved_run_root() / "locks")
        return key

    key_fn.stage = stage  # type: ignore[attr-defined]  # read by the tests of the code keys
    return CacheKeyFnPolicy(cache_key_fn=key_fn).configure(
        isolation_level=IsolationLevel.SERIALIZABLE,
        lock_manager=LOCK_MANAGER,
    )


def task_key(task: Any, parameters: dict[str, Any]) -> str:
    """The cache key ``task``'s policy computes for ``parameters`` (without running it)."""
    return task.cache_policy.cache_key_fn(SimpleNamespace(task=task), parameters)


def cached_artefact(task: Any, *args: Any, **kwargs: Any) -> Artefact | None:
    """The artefact ``task(*args, **kwargs)`` would return as a cache hit, if its result store holds one
    under the key those arguments give and the artefact verifies; else None. Runs nothing."""
    from prefect.results import get_result_store

    parameters = dict(inspect.signature(task.fn).bind(*args, **kwargs).arguments)
    store = get_result_store().update_for_task(task)
    key = task_key(task, parameters)
    try:
        if not store.exists(key):
            return None
        value = store.read(key).result
    except Exception as exc:  # an unreadable entry: the stage runs and writes it again
        logger.warning("cache entry %s could not be read (%s); running the stage", key, exc)
        return None
    return value if isinstance(value, Artefact) and verify_artefact(value) else None


def output_key() -> str:
    """The running task's cache-key digest, which names its output folder: the folder and the cache
    entry come from one computation over the same parameters, so they cannot disagree."""
    context = TaskRunContext.get()
    if context is None:
        raise RuntimeError("output_key() is called from inside a running task")
    return task_key(context.task, context.parameters).rsplit("-", 1)[-1]


def run_verified(task: Callable[..., Artefact], *args: Any, **kwargs: Any) -> Artefact:
    """Call a cached task; if the artefact it returns has vanished or changed, run it again for real."""
    record = task(*args, **kwargs)
    if verify_artefact(record):
        return record
    logger.warning("artefact %s is missing or altered; rebuilding it (cache refresh)", record.path)
    record = task.with_options(refresh_cache=True)(*args, **kwargs)
    if not verify_artefact(record):
        raise RuntimeError(f"{task.name} produced an artefact that fails verification: {record.path}")
    return record
