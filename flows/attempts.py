"""A retried flow run first ends what its dead attempt left running.

When an attempt's process dies (``kill -9``, the out-of-memory killer, a lost node), its task runs stay
Running on the server, and each keeps the concurrency slot it held (the ``gpu`` tag limit that ``alignx
deploy`` creates) until the slot's lease expires, up to a minute later: the retry's first GPU stage
waited that long for a slot nobody held (33-42 s measured in the end-to-end crash test), and the UI
showed the dead tasks running for ever. A flow run that is retried cannot have a live task run from an
earlier attempt (the attempt ended before the retry started), so every task run of it still Running
when it enters Running again is marked Crashed; the server then releases their slots at once.
"""

from __future__ import annotations

import logging
logger = logging.getLogger(__name__)


def end_earlier_attempts() -> int:
    """Mark the task runs a dead earlier attempt of the current flow run left Running as Crashed.

    Called first in a flow's body, before it starts any task: on a first attempt there is none to find.
    Returns how many it ended. Best effort: a failure is logged, never raised.
    """
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return 0
    flow, flow_run = context.flow, context.flow_run
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterId, TaskRunFilter,
                                                    TaskRunFilterState, TaskRunFilterStateType)
        from prefect.client.schemas.objects import StateType
        from prefect.states import Crashed

        with get_client(sync_client=True) as client:
            left = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])),
                task_run_filter=TaskRunFilter(state=TaskRunFilterState(
                    type=TaskRunFilterStateType(any_=[StateType.RUNNING]))))
            attempt = client.read_flow_run(flow_run.id).run_count if left else 1  # the hook's copy is older
            for run in left:
                client.set_task_run_state(run.id, Crashed(
                    message=f"its process ended with an earlier attempt of flow run {flow_run.name!r}; "
                            f"attempt {attempt} ended it"), force=True)
        if left:
            from prefect.logging.loggers import flow_run_logger

            flow_run_logger(flow_run, flow).warning("attempt %d of %s: marked %d task run(s) of the earlier attempt Crashed (%s); "
                           "their concurrency slots are free", attempt, flow_run.name, len(left),
                           ", ".join(sorted(r.name for r in left)))
        return len(left)
    except Exception as exc:  # the slots still free themselves when their leases expire
        logger.warning("could not end the earlier attempt's task runs of %s: %s", flow_run.name, exc)
        return 0
