"""Fingerprints of the inputs that key the cached stages: each is its own small Prefect task.

Hashing a corpus, a GGUF file or the benchmark files reads real data (a 93 MB GGUF is hashed whole),
so it runs as a task: it shows in the run's task list and log, fails with its own message, and a
transient I/O error is retried. Never cached: a fingerprint exists to notice a changed file.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from alignx.config import PipelineConfig
from alignx.data import data_stages
from alignx.eval.evaluation_plan import benchmark_fingerprint
from alignx.model import base_models
from tasks.retries import READ_RETRY


@task(name="fingerprint-source", task_run_name="fingerprint-{source}", cache_policy=NO_CACHE, **READ_RETRY)
def source(source: str, cfg: PipelineConfig) -> str:
    """A catalogue source's files (mirror) or hub revision."""
    return data_stages.data_source_fingerprint(source, cfg)


@task(name="fingerprint-base-model", cache_policy=NO_CACHE, **READ_RETRY)
def base_model(spec: str) -> str:
    """The base model's GGUF SHA-256, directory content or hub commit."""
    return base_models.base_model_fingerprint(spec)


@task(name="fingerprint-benchmarks", cache_policy=NO_CACHE, **READ_RETRY)
def benchmarks(cfg: PipelineConfig) -> str:
    """The benchmark and alignment files an evaluation reads."""
    return benchmark_fingerprint(cfg)
