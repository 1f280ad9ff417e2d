"""Prefect tasks for the data stages: collect -> language-ID filter -> Parquet shards."""

from __future__ import annotations

from prefect import task

from alignx.artefacts import Artefact
from alignx.config import PipelineConfig
from alignx.data import data_stages
from tasks.caching import stage_cache
from tasks.retries import READ_RETRY
from tasks.stage_progress import ProgressReporter


@task(
    name="collect",
    task_run_name="collect-{source}",
    cache_policy=stage_cache(["data.max_pairs_per_pair", "languages", "pivot", "data_mirror"]),
    persist_result=True,
    tags=["data"],
    **READ_RETRY,
)
def collect(source: str, source_fingerprint: str, cfg: PipelineConfig) -> Artefact:
    """Read one catalogue source into raw Parquet (the source fingerprint keys the cache on its files)."""
    return data_stages.collect_source(source, cfg, cfg.resolved_run_root(), progress=ProgressReporter(f"collect-{source}", f"collect {source}"))


@task(
    name="langid-filter",
    cache_policy=stage_cache(["data.langid", "data.filters", "languages", "pivot"]),
    persist_result=True,
    tags=["data"],
    **READ_RETRY,
)
def langid_filter(raw: list[Artefact], cfg: PipelineConfig) -> Artefact:
    """Language-ID and quality filters over every raw source (dedup across sources)."""
    return data_stages.filter_pairs(raw, cfg, cfg.resolved_run_root(), progress=ProgressReporter("langid-filter", "language-ID filter"))


@task(
    name="shard",
    cache_policy=stage_cache(["data.shard"]),
    persist_result=True,
    tags=["data"],
    **READ_RETRY,
)
def shard(filtered: Artefact, cfg: PipelineConfig) -> Artefact:
    """Write the filtered pairs as train/valid Parquet shards with a manifest."""
    return data_stages.write_shards(filtered, cfg, cfg.resolved_run_root())
