"""Benchmarks, log-likelihood and generation scoring, alignment metrics, statistics and the report."""
