"""Test-wide set-up: offline hub, a private PREFECT_HOME, and one Prefect test harness per session.

Environment is set at import time, before anything imports prefect.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_PREFECT_HOME = tempfile.mkdtemp(prefix="alignx-test-prefect-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.setdefault("ALIGNX_LOCK_DIR", str(Path(_PREFECT_HOME) / "locks"))
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MIRROR = (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The public data mirror (../shared/data); tests never modify it."""
    if not MIRROR.is_dir():
        pytest.fail(f"public data mirror not found at {MIRROR}")
    return MIRROR


@pytest.fixture(scope="session")
def prefect_api():
    """One ephemeral Prefect API (SQLite) for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def pytest_collection_modifyitems(config, items):
    """The end-to-end test first, then the files marked slow, then the rest in their order: under
    ``-n 2 --dist loadfile --no-loadscope-reorder`` one worker runs the longest file while the other works
    through the rest, and short files fill the end (xdist's default reorder, by test count, would start
    the single e2e test last, and it would end the run alone: 4 minutes of one idle core, measured)."""
    def rank(item) -> int:
        return 0 if "/e2e/" in str(item.fspath) else 1 if item.get_closest_marker("slow") else 2

    items.sort(key=rank)
