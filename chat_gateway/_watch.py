"""Watching a task for a session: the gateway's subscriber of the task's one follower.

The events come from `switchboard.follow` (one poller per task per process, shared
with the API's event streams), so a task watched by many sessions, and streamed
to many clients besides, is still read once. The watcher adds what a session
needs: the task's status with each batch that changed it (at most once a second
for subagent steps alone), the recorded cursor, and a retry when following fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from switchboard.errors import NotFound, ServiceError, ServiceUnavailable
from switchboard.follow import EventBatch
from switchboard.models import EventKind, TaskEvent, TaskStatus
from switchboard.service import TaskService

__all__ = ["TaskWatcher", "Update"]

log = logging.getLogger(__name__)

STATUS_EVERY_SECONDS = 1.0
"""Subagent steps alone refresh the task's status at most this often (the events carry
the step counts already); anything else refreshes it at once."""
_STEP_KINDS = frozenset(
    {EventKind.SUBAGENT_STEP, EventKind.SUBAGENT_STARTED, EventKind.TOOL_DENIED}
)
RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)

Update = Callable[[str, list[TaskEvent], TaskStatus | None, int], Awaitable[None]]
"""Called with (task id, new events, status, next offset) each time the task moved."""


class TaskWatcher:
    """Delivers a task's events from `cursor` on, once each and in order, until it ends.

    Args:
        service: Reads status; its `followers` deliver the events.
        task_id: The task.
        cursor: The first event offset to deliver.
        on_update: Receives each batch; an exception from it is logged and the
            batch retried, so nothing is skipped.
    """

    def __init__(self, service: TaskService, task_id: str, cursor: int, on_update: Update) -> None:
        self.task_id = task_id
        self.cursor = cursor
        self.final = False
        self._service = service
        self._on_update = on_update
        self._caught_up = asyncio.Event()
        self._status_at = 0.0
        self._failures = 0

    @property
    def is_caught_up(self) -> bool:
        return self._caught_up.is_set()

    async def caught_up(self, timeout: float) -> None:
        """Wait (at most `timeout` s) until the events that existed at start are delivered."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._caught_up.wait(), timeout)

    async def run(self) -> None:
        try:
            while not self.final:
                try:
                    await self._follow()
                    self.final = True
                except NotFound:
                    log.warning("%s no longer exists; stop watching it", self.task_id)
                    self.final = True
                except Exception as exc:  # resumed from the cursor: nothing is skipped
                    delay = RETRY_SECONDS[min(self._failures, len(RETRY_SECONDS) - 1)]
                    self._failures += 1
                    expected = isinstance(exc, ServiceError)
                    log.log(
                        logging.INFO if expected else logging.ERROR,
                        "watching %s: %s; again in %.1f s",
                        self.task_id,
                        exc,
                        delay,
                        exc_info=not expected,
                    )
                    await asyncio.sleep(delay)
        finally:
            self._caught_up.set()

    async def _follow(self) -> None:
        followers = self._service.followers
        async with followers.follow(self.task_id, self.cursor, patient=True) as subscription:
            waiting = asyncio.create_task(subscription.caught_up.wait())
            waiting.add_done_callback(lambda _: self._caught_up.set())
            try:
                async for batch in subscription.batches():
                    await self._deliver(batch)
            finally:
                waiting.cancel()

    async def _deliver(self, batch: EventBatch) -> None:
        status = await self._status(batch.events, batch.final)
        await self._on_update(self.task_id, batch.events, status, batch.next_offset)
        self.cursor = max(self.cursor, batch.next_offset)
        self._failures = 0

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
