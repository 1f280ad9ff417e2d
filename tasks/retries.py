"""The retry policies of AlignX tasks, by name: only transient failures are retried, never bad input.

A task takes one with ``@task(..., **READ_RETRY)``; a policy here is the one place its count and delays live.
"""

from __future__ import annotations

from typing import Any

# Errors that are worth a retry: transient I/O, not bad input.
_NOT_TRANSIENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def is_transient(exc: BaseException | None) -> bool:
    """True for transient failures (I/O hiccups, out-of-memory); False for bad input or bugs."""
    if exc is None:
        return False
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, (OSError, TimeoutError, ConnectionError)) and not isinstance(exc, _NOT_TRANSIENT)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only transient errors, never bad input."""
    try:
        state.result()
    except BaseException as exc:  # the failed state's exception comes back here
        return is_transient(exc)
    return False


def _on_transient(*delays_s: int) -> dict[str, Any]:
    return {"retries": len(delays_s), "retry_delay_seconds": list(delays_s), "retry_condition_fn": retry_transient}


# Reading and hashing data (collect, filter, shard, fingerprints): cheap to repeat, soon.
READ_RETRY = _on_transient(5, 30)
# Training stages and the base model: a retry resumes from the last checkpoint; give a lost worker time.
TRAIN_RETRY = _on_transient(10, 60)
# Evaluation and the report: one more try.
EVAL_RETRY = _on_transient(10)
# Runs whose failure is the answer (the preflight) or that only wait on others (arm chains, dispatch).
NO_RETRY: dict[str, Any] = {"retries": 0}
