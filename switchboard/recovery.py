"""A restarted worker takes back at once what its killed predecessor held.

A SIGKILLed worker tells the server nothing. Left alone, the activity attempts it
was running are retried only when their heartbeat timeout lapses, and workflow
tasks queued on its sticky queue wait for the sticky schedule-to-start timeout;
the task stalls for seconds to minutes. The host queue names the machine, and
its sandboxes and worktrees live only there, so the worker that starts next on
the same host is the one that can resume that work, and knows it:

- every activity attempt in state STARTED of this host's subagents, or of a task
  past its approval gate or before it, whose worker
  (`pid@hostname`, the SDK's default identity) is a process of this host that no
  longer exists is failed by id, retryable, so Temporal retries it now;
- each running workflow on this host's queue has its sticky queue reset, so its
  next workflow task goes to the host queue, where the new worker polls.

Both go through Temporal's own APIs (`RespondActivityTaskFailedById`,
`ResetStickyTaskQueue`); the retry itself stays Temporal's. An attempt of a live
worker is never touched: the check is `kill(pid, 0)` on this host.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.workflowservice.v1 import ResetStickyTaskQueueRequest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from switchboard.models import Phase
from switchboard.settings import Settings
from switchboard.wire import Errors, SearchAttributes, Workflows

log = logging.getLogger(__name__)

RETRY_NOW = timedelta(milliseconds=1)
"""Delay of the retry after a reclaimed attempt: none worth the name."""


@dataclass
class Reclaimed:
    """What `reclaim_host` did."""

    workflows: int = 0
    attempts: list[str] = field(default_factory=list)
    """`workflow_id/activity_id` of each failed attempt."""


def dead_local_worker(identity: str, hostname: str | None = None) -> bool:
    """Whether `identity` (`pid@hostname`) names a process of this host that is gone."""
    pid_text, sep, host = identity.partition("@")
    if not sep or host != (hostname or socket.gethostname()) or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    return pid != os.getpid() and not process_alive(pid)


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (of any user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


async def reclaim_host(client: Client, settings: Settings) -> Reclaimed:
    """Fail the dead predecessor's in-flight attempts on this host; reset stickiness."""
    done = Reclaimed()
    try:
        await _reclaim(client, settings, done)
    except RPCError as exc:  # never fatal: the heartbeat timeouts still apply
        log.warning("could not take back a dead worker's attempts: %s", exc)
    if done.attempts:
        log.info(
            "took back %d attempts of a dead worker on %s: %s",
            len(done.attempts),
            settings.host_queue,
            done.attempts,
        )
    return done


async def _reclaim(client: Client, settings: Settings, done: Reclaimed) -> None:
    # This host's subagents, and the tasks that may have an activity on its queue
    # (merges, diffs, cleanup); tasks parked at the approval gate run none.
    query = (
        f"ExecutionStatus = 'Running' AND (TaskQueue = '{settings.host_queue}' OR "
        f"(WorkflowType = '{Workflows.TASK}' AND "
        f"{SearchAttributes.PHASE.name} != '{Phase.AWAITING_APPROVAL.value}'))"
    )
    async for execution in client.list_workflows(query):
        done.workflows += 1
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        # A task on the shared queue may be cached by a live worker: only this host's
        # own workflows lose their sticky queue.
        if execution.task_queue == settings.host_queue:
            with contextlib.suppress(RPCError):  # ended meanwhile
                await client.workflow_service.reset_sticky_task_queue(
                    ResetStickyTaskQueueRequest(
                        namespace=client.namespace,
                        execution=WorkflowExecution(
                            workflow_id=execution.id, run_id=execution.run_id or ""
                        ),
                    )
                )
        try:
            described = await handle.describe()
        except RPCError:
            continue
        for pending in described.raw_description.pending_activities:
            if pending.state != PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
                continue
            if not dead_local_worker(pending.last_worker_identity):
                continue
            attempt = client.get_async_activity_handle(
                workflow_id=execution.id,
                run_id=execution.run_id,
                activity_id=pending.activity_id,
            )
            try:
                await attempt.fail(
                    ApplicationError(
                        f"the worker running this attempt ({pending.last_worker_identity}) "
                        "died; retrying on its successor",
                        type=Errors.WORKER_LOST,
                        next_retry_delay=RETRY_NOW,
                    )
                )
            except RPCError:
                continue  # completed or timed out meanwhile
            done.attempts.append(f"{execution.id}/{pending.activity_id}")
