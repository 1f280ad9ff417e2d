"""The layout of an evaluation folder, which the runner writes and the report and model cards read:
``metrics.json`` (results, groups, tasks, the model evaluated) and ``items/<task>.jsonl`` (one row per item).
Kept apart from the runner so a reader does not import the evaluation stack (or key its cache on it)."""

METRICS_FILE = "metrics.json"
ITEMS_DIR = "items"
