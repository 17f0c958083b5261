"""Watching a task: one watcher per task per gateway, woken by the task's history.

Polling the events query on a timer trades latency for load (100 ms per task
is 500 queries a second for 50 tasks). Instead the watcher long-polls the
task's history (`GetWorkflowExecutionHistory` with `wait_new_event`, what
`handle.result()` uses): the server answers when the task's history grows, and
only a completed workflow task can have changed its event log, so the watcher
reads the events query exactly then. An event reaches the watcher a few
milliseconds after the workflow task that made it, and an idle task costs one
parked request. If the long poll fails, the watcher polls on a timer until it
works again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError

from switchboard.models import EventKind, EventsPage, TaskEvent, TaskStatus
from switchboard.service import ServiceError, ServiceUnavailable, TaskNotFound, TaskService

__all__ = ["TaskWatcher", "Update"]

log = logging.getLogger(__name__)

PAGE = 500
STATUS_EVERY_SECONDS = 1.0
"""Subagent steps alone refresh the task's status at most this often (the events carry
the step counts already); anything else refreshes it at once."""
_STEP_KINDS = frozenset(
    {EventKind.SUBAGENT_STEP, EventKind.SUBAGENT_STARTED, EventKind.TOOL_DENIED}
)
FALLBACK_POLL_SECONDS = 0.5
RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)

_WAKE = frozenset(
    {
        EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
    }
)
_CLOSED = _WAKE - {EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED}

Update = Callable[[str, list[TaskEvent], TaskStatus | None, int], Awaitable[None]]
"""Called with (task id, new events, status, next offset) each time the task moved."""


class TaskWatcher:
    """Delivers a task's events from `cursor` on, once each and in order, until it ends.

    Args:
        client: The Temporal client (for the history long poll).
        service: Reads events and status.
        task_id: The task.
        cursor: The first event offset to deliver.
        on_update: Receives each batch; an exception from it is logged and the
            batch retried, so nothing is skipped.
    """

    def __init__(
        self,
        client: Client,
        service: TaskService,
        task_id: str,
        cursor: int,
        on_update: Update,
    ) -> None:
        self.task_id = task_id
        self.cursor = cursor
        self.final = False
        self._client = client
        self._service = service
        self._on_update = on_update
        self._caught_up = asyncio.Event()
        self._status_at = 0.0

    @property
    def is_caught_up(self) -> bool:
        return self._caught_up.is_set()

    async def caught_up(self, timeout: float) -> None:
        """Wait (at most `timeout` s) until the events that existed at start are delivered."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._caught_up.wait(), timeout)

    async def run(self) -> None:
        attempt = 0
        while not self.final:
            try:
                await self._first_pull()
                self._caught_up.set()
                if self.final:
                    return
                await self._follow_history()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except TaskNotFound:
                log.warning("%s no longer exists; stop watching it", self.task_id)
                self.final = True
            except (ServiceError, RPCError) as exc:
                delay = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                attempt += 1
                log.info("watching %s: %s; again in %.1f s", self.task_id, exc, delay)
                await asyncio.sleep(delay)
            except Exception:
                log.exception("watching %s failed; falling back to polling", self.task_id)
                await self._poll_once()
        self._caught_up.set()

    async def _first_pull(self) -> None:
        # A task started a moment ago answers no query until its first workflow task
        # completes; the history long poll wakes the watcher exactly then.
        try:
            await self._pull()
        except TaskNotFound:
            raise
        except ServiceError as exc:
            log.debug("%s not readable yet (%s); waiting on its history", self.task_id, exc)

    async def _follow_history(self) -> None:
        handle = self._client.get_workflow_handle(self.task_id)
        history = handle.fetch_history_events(wait_new_event=True)
        while not self.final:
            await history.fetch_next_page()
            page = history.current_page or []
            kinds = {event.event_type for event in page}
            if kinds & _WAKE:
                await self._pull()
            if kinds & _CLOSED:
                await self._pull()
                self.final = True
                return
            if history.next_page_token is None:
                # A closed run's history ends without a close event only if it moved on.
                await self._pull()
                self.final = self.final or not await self._running()
                if not self.final:
                    await asyncio.sleep(FALLBACK_POLL_SECONDS)
                return

    async def _poll_once(self) -> None:
        await asyncio.sleep(FALLBACK_POLL_SECONDS)
        with contextlib.suppress(ServiceUnavailable):
            await self._pull()

    async def _pull(self) -> None:
        """Deliver every event from the cursor on (one query when nothing is new)."""
        while True:
            page: EventsPage = await self._service.events(self.task_id, self.cursor, PAGE)
            events = page.events
            if events:
                status = await self._status(events, page.final)
                await self._on_update(self.task_id, events, status, page.next_offset)
            self.cursor = max(self.cursor, page.next_offset)
            if page.final:
                self.final = True
            if len(page.events) < PAGE:
                return

    async def _status(self, events: list[TaskEvent], final: bool) -> TaskStatus | None:
        now = asyncio.get_running_loop().time()
        steps_only = all(e.kind in _STEP_KINDS for e in events)
        if steps_only and not final and now - self._status_at < STATUS_EVERY_SECONDS:
            return None
        self._status_at = now
        try:
            return await self._service.status(self.task_id)
        except ServiceUnavailable:
            return None

    async def _running(self) -> bool:
        try:
            description = await self._client.get_workflow_handle(self.task_id).describe()
        except RPCError:
            return True
        return description.close_time is None
