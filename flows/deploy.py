"""Register AlignX with a Prefect server: work pools, the ``gpu`` concurrency limit, every deployment.

``prefect deploy`` writes each schedule's ``active`` flag from prefect.yaml, so a redeploy would switch
off the weekly retraining a user switched on in the UI. ``deploy`` remembers each schedule's state
before and puts it back after, matching schedules by deployment name and slug (else cron + timezone).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from alignx.config import REPO_ROOT

log = logging.getLogger(__name__)
POOLS = ("alignx-cpu", "alignx-gpu")


def _schedule_id(schedule: Any) -> str:
    slug = getattr(schedule, "slug", None)
    if slug:
        return f"slug:{slug}"
    inner = schedule.schedule
    return f"{type(inner).__name__}:{getattr(inner, 'cron', None) or getattr(inner, 'interval', None) or getattr(inner, 'rrule', None)}:{getattr(inner, 'timezone', None)}"


def schedule_states() -> dict[tuple[str, str], bool]:
    """``{(deployment name, schedule id): active}`` for every schedule on the server."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {(d.name, _schedule_id(s)): s.active for d in client.read_deployments() for s in d.schedules}


def restore_schedule_states(before: dict[tuple[str, str], bool]) -> list[str]:
    """Set each schedule that existed before back to its earlier active state; returns what changed."""
    from prefect.client.orchestration import get_client

    restored = []
    with get_client(sync_client=True) as client:
        for deployment in client.read_deployments():
            for schedule in deployment.schedules:
                was = before.get((deployment.name, _schedule_id(schedule)))
                if was is not None and was != schedule.active:
                    client.update_deployment_schedule(deployment.id, schedule.id, active=was)
                    restored.append(f"{deployment.name}: schedule {'active' if was else 'inactive'} as before")
    return restored


def deploy(gpu_slots: int) -> tuple[int, list[str]]:
    """Create the pools and the ``gpu`` limit, then register every deployment of prefect.yaml.

    Returns ``prefect deploy``'s exit status and the schedules whose earlier state was put back."""
    prefect = str(Path(sys.executable).with_name("prefect"))
    env = {**os.environ, "ALIGNX_REPO": str(REPO_ROOT)}
    for pool in POOLS:
        subprocess.run([prefect, "work-pool", "create", pool, "--type", "process", "--overwrite"],
                       cwd=REPO_ROOT, env=env, check=True)
    subprocess.run([prefect, "concurrency-limit", "create", "gpu", str(gpu_slots)], cwd=REPO_ROOT, env=env, check=True)
    before = schedule_states()
    rc = subprocess.call([prefect, "--no-prompt", "deploy", "--all"], cwd=REPO_ROOT, env=env)
    return rc, restore_schedule_states(before) if rc == 0 else []
