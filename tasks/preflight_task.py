"""The preflight as a Prefect task: every stage's input checks before any work, never cached."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from alignx import preflight as checks
from alignx.config import PipelineConfig
from tasks.retries import NO_RETRY


@task(name="preflight", cache_policy=NO_CACHE, **NO_RETRY)
def preflight(cfg: PipelineConfig) -> None:
    """Every stage's input checks before any work (alignx.preflight); fails listing every problem."""
    checks.preflight(cfg)
