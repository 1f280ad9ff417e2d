"""Evaluation: benchmark registry (YAML specs under ``tasks/``), log-likelihood and generation scoring,
alignment metrics, paired bootstrap statistics and the comparison report.

Entry points: ``alignx.eval.runner.evaluate_model`` (one checkpoint -> metrics.json + per-item rows),
``alignx.eval.report.write_report`` (eval dirs of several arms -> report.md + plots) and
``alignx.eval.runner.benchmark_fingerprint`` (what the evaluation reads, for cache keys).
"""
