"""Prefect tasks for the data stages: collect -> language-ID filter -> Parquet shards."""

from __future__ import annotations

from prefect import task

from alignx.artefacts import Artefact
from alignx.config import PipelineConfig
from alignx.data import stages
from tasks.caching import retry_transient, stage_cache
from tasks.observe import ProgressReporter

_RETRY = dict(retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_transient)


@task(
    name="collect",
    task_run_name="collect-{source}",
    cache_policy=stage_cache(["data.max_pairs_per_pair", "languages", "pivot", "data_mirror"]),
    persist_result=True,
    tags=["data"],
    **_RETRY,
)
def collect(source: str, source_fingerprint: str, cfg: PipelineConfig) -> Artefact:
    """Read one catalogue source into raw Parquet (the source fingerprint keys the cache on its files)."""
    return stages.collect_source(source, cfg, cfg.resolved_run_root(), progress=ProgressReporter(f"collect-{source}", f"collect {source}"))


@task(
    name="langid-filter",
    cache_policy=stage_cache(["data.langid", "data.filters", "languages", "pivot"]),
    persist_result=True,
    tags=["data"],
    **_RETRY,
)
def langid_filter(raw: list[Artefact], cfg: PipelineConfig) -> Artefact:
    """Language-ID and quality filters over every raw source (dedup across sources)."""
    return stages.filter_pairs(raw, cfg, cfg.resolved_run_root(), progress=ProgressReporter("langid-filter", "language-ID filter"))


@task(
    name="shard",
    cache_policy=stage_cache(["data.shard"]),
    persist_result=True,
    tags=["data"],
    **_RETRY,
)
def shard(filtered: Artefact, cfg: PipelineConfig) -> Artefact:
    """Write the filtered pairs as train/valid Parquet shards with a manifest."""
    return stages.write_shards(filtered, cfg, cfg.resolved_run_root())
