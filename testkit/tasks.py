"""Waiting on a task the way a user would: through its status query, with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from temporalio.client import Client, WorkflowHandle

from switchboard.models import Phase, TaskStatus
from switchboard.wire import Queries


async def status_of(handle: WorkflowHandle[object, object]) -> TaskStatus:
    status: TaskStatus = await handle.query(Queries.STATUS, result_type=TaskStatus)
    return status


async def wait_for(
    handle: WorkflowHandle[object, object],
    predicate: Callable[[TaskStatus], bool],
    *,
    timeout: float = 90.0,
    what: str = "condition",
) -> TaskStatus:
    """Poll the status query until `predicate` holds (no timing assertion: a deadline)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: TaskStatus | None = None
    while loop.time() < deadline:
        try:
            last = await status_of(handle)
        except Exception:  # the first workflow task may not have run yet
            last = None
        if last is not None and predicate(last):
            return last
        if last is not None and last.phase.is_final and not predicate(last):
            raise AssertionError(f"task ended in {last.phase} ({last.error}) before {what}")
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last status: {last}")


async def wait_for_phase(
    handle: WorkflowHandle[object, object], phase: Phase, timeout: float = 90.0
) -> TaskStatus:
    return await wait_for(handle, lambda s: s.phase is phase, timeout=timeout, what=str(phase))


async def history_event_types(client: Client, workflow_id: str) -> list[str]:
    handle = client.get_workflow_handle(workflow_id)
    history = await handle.fetch_history()
    return [e.WhichOneof("attributes") or "" for e in history.events]
