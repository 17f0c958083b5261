"""Following a task's events: one poller per task per process, fanned out to every subscriber.

The CLI's `task watch`, the API's `GET /v1/tasks/{id}/events` and the gateway's
task watchers all subscribe here. However many subscribers a task has in one
process, one poller reads its events: it long-polls the task's history
(`GetWorkflowExecutionHistory` with `wait_new_event`, what `handle.result()`
uses), so the server answers when the history grows, and reads the events query
exactly then (only a completed workflow task can have changed the event log). An
event reaches the poller a few milliseconds after the workflow task that made it,
and an idle task costs one parked request, not a query per subscriber per tick.

The poller keeps the newest `KEPT_EVENTS` events. Each subscriber reads from its
own offset at its own pace (`switchboard._subscription`): a slow one never holds
up the poller or the others, and one that falls behind the kept window (or asks
for older events) reads the missing pages itself.

While the task's events cannot be read (an events query goes unanswered: no
worker within the query timeout; or Temporal is unreachable) the poller keeps
trying for as long as anyone subscribes, asking again every `PROBE_SECONDS` even
when the history does not move (a parked task's does not), so it notices the
worker's return. An impatient subscriber (`task watch`, the SSE endpoint) gets a
`FollowNotice` "worker unavailable" once per stall and "worker back" when it
ends; a patient one (the gateway's watchers) just waits. Either way the
subscription ends only when the task has ended and every event was handed out.
The poller stops when its last subscriber leaves or the task ends; any other
failure is retried `len(RETRY_SECONDS)` times in a row, then every subscriber gets
the error (a subscriber that wants to keep following subscribes again, which
starts a new poller).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from bisect import bisect_left
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from switchboard._subscription import EventBatch, Subscription
from switchboard.errors import NotFound, ServiceError, ServiceUnavailable
from switchboard.models import EventsPage, FollowNotice, TaskEvent

__all__ = [
    "KEPT_EVENTS",
    "PAGE",
    "PROBE_SECONDS",
    "EventBatch",
    "EventReader",
    "FollowerStats",
    "Subscription",
    "TaskFollowers",
]

log = logging.getLogger(__name__)

PAGE = 500
"""Events per query, and at most this many per batch handed to a subscriber."""
KEPT_EVENTS = 2_000
"""Events a poller keeps for its subscribers; older ones are read again on demand."""
FALLBACK_POLL_SECONDS = 0.5
RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)
PROBE_SECONDS = 5.0
"""While the events go unanswered, the poller asks again after this long without news."""

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


class EventReader(Protocol):
    """Reads one page of a task's events (`TaskService.events`)."""

    async def events(self, task_id: str, from_offset: int = 0, limit: int = 500) -> EventsPage: ...


@dataclass
class FollowerStats:
    """What following has cost this process (read by tests and benchmarks)."""

    pollers_started: int = 0
    event_queries: int = 0
    """Events queries of the pollers."""
    catch_up_queries: int = 0
    """Events queries of subscribers reading what their poller no longer keeps."""


@dataclass
class _Poller:
    task_id: str
    first: int
    """Every event at or after this offset, up to `cursor`, is in `events`."""
    cursor: int
    events: list[TaskEvent] = field(default_factory=list)
    final: bool = False
    error: ServiceError | None = None
    pulled: bool = False
    """The events that existed when the poller started have been read."""
    unanswered: ServiceUnavailable | None = None
    """Why the last events query went unanswered (no worker, Temporal down), until one is."""
    subscribers: int = 0
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.wake.set()
        self.wake = asyncio.Event()

    def keep(self, page: EventsPage) -> None:
        fresh = [e for e in page.events if e.offset >= self.cursor]
        self.events.extend(fresh)
        self.cursor = max(self.cursor, page.next_offset)
        if len(self.events) > KEPT_EVENTS:
            del self.events[: len(self.events) - KEPT_EVENTS]
            self.first = self.events[0].offset
        self.final = self.final or page.final
        if fresh or page.final:
            self.notify()

    def batch_from(self, offset: int) -> EventBatch:
        """Kept events from `offset` (at most `PAGE`); `offset` must be below the cursor."""
        start = bisect_left(self.events, offset, key=lambda e: e.offset)
        events = self.events[start : start + PAGE]
        upto = events[-1].offset + 1 if len(events) == PAGE else self.cursor
        return EventBatch(events, upto, self.final and upto >= self.cursor)

    def answered(self, page: EventsPage) -> None:
        """A query answered: keep its events; a stall, if any, is over."""
        if self.unanswered is not None:
            self.unanswered = None
            self.notify()
        self.keep(page)

    def stall(self, why: ServiceUnavailable) -> None:
        if self.unanswered is None:
            self.unanswered = why
            self.notify()
        else:
            self.unanswered = why  # the same stall, told once: no wake-up


class TaskFollowers:
    """Every followed task of this process, one poller each.

    Args:
        client: For the history long poll.
        reader: Reads event pages (the task service).
    """

    def __init__(self, client: Client, reader: EventReader) -> None:
        self._client = client
        self._reader = reader
        self._pollers: dict[str, _Poller] = {}
        self.stats = FollowerStats()

    @property
    def active(self) -> int:
        """Tasks with a running poller."""
        return len(self._pollers)

    def subscribe(
        self, task_id: str, from_offset: int = 0, *, patient: bool = False
    ) -> Subscription:
        """Follow `task_id` from `from_offset`; close the subscription when done.

        Args:
            patient: Wait silently while the events go unanswered (a watcher that
                outlives outages); otherwise each stall, and its end, is reported as
                a batch with a `notice` (a person watching wants to know).
        """
        poller = self._pollers.get(task_id)
        if poller is None:
            poller = _Poller(task_id, first=from_offset, cursor=from_offset)
            self._pollers[task_id] = poller
            self.stats.pollers_started += 1
            poller.task = asyncio.create_task(self._run(poller), name=f"follow {task_id}")
        poller.subscribers += 1
        return Subscription(
            poller,
            from_offset,
            patient=patient,
            catch_up=self._catch_up,
            leave=lambda: self._leave(poller),
        )

    @contextlib.asynccontextmanager
    async def follow(
        self, task_id: str, from_offset: int = 0, *, patient: bool = False
    ) -> AsyncIterator[Subscription]:
        subscription = self.subscribe(task_id, from_offset, patient=patient)
        try:
            yield subscription
        finally:
            subscription.close()

    async def watch(
        self, task_id: str, from_offset: int = 0
    ) -> AsyncIterator[TaskEvent | FollowNotice]:
        """Events from `from_offset` as they happen, until the task has ended, with a
        notice when they stop being readable and another when they are again."""
        async with self.follow(task_id, from_offset) as subscription:
            async for event in subscription.events():
                yield event

    # ---- the poller -----------------------------------------------------------------

    def _leave(self, poller: _Poller) -> None:
        poller.subscribers -= 1
        if poller.subscribers <= 0 and poller.task is not None:
            poller.task.cancel()
            self._forget(poller)

    def _forget(self, poller: _Poller) -> None:
        if self._pollers.get(poller.task_id) is poller:
            del self._pollers[poller.task_id]

    async def _read(self, task_id: str, offset: int) -> EventsPage:
        self.stats.event_queries += 1
        return await self._reader.events(task_id, offset, PAGE)

    async def _catch_up(self, task_id: str, offset: int) -> EventsPage:
        self.stats.catch_up_queries += 1
        return await self._reader.events(task_id, offset, PAGE)

    async def _run(self, poller: _Poller) -> None:
        backoff = _Backoff()
        try:
            while not poller.final:
                try:
                    await self._first_pull(poller)
                    if not poller.final:
                        await self._follow_history(poller)
                    backoff = _Backoff()
                except NotFound as exc:
                    poller.error = exc
                    return
                except Exception as exc:  # retried; a stall for as long as anyone follows
                    delay = backoff.after(poller, exc)
                    if delay is None:
                        poller.error = _as_service_error(poller.task_id, exc)
                        return
                    await asyncio.sleep(delay)
        finally:
            self._forget(poller)
            poller.notify()

    async def _first_pull(self, poller: _Poller) -> None:
        # A task started a moment ago answers no query until its first workflow task
        # completes; the history long poll wakes the poller exactly then.
        try:
            await self._pull(poller)
        except NotFound:
            raise
        except ServiceError as exc:
            log.debug("%s not readable yet (%s); waiting on its history", poller.task_id, exc)
        finally:
            poller.pulled = True
            poller.notify()

    async def _follow_history(self, poller: _Poller) -> None:
        history = self._client.get_workflow_handle(poller.task_id).fetch_history_events(
            wait_new_event=True
        )
        while not poller.final:
            if poller.unanswered is None:
                await history.fetch_next_page()
            else:
                # Stalled: a parked task's history does not move when workers come
                # back, so ask again after a while without news.
                try:
                    async with asyncio.timeout(PROBE_SECONDS):
                        await history.fetch_next_page()
                except TimeoutError:
                    await self._pull(poller)  # raises while the events go unanswered
                    continue
            kinds = {event.event_type for event in history.current_page or []}
            if kinds & _WAKE:
                await self._pull(poller)
            if kinds & _CLOSED:
                await self._pull(poller)
                poller.final = True
                return
            if history.next_page_token is None:
                # A closed run's history ends without a close event only if it moved on.
                await self._pull(poller)
                poller.final = poller.final or not await self._running(poller.task_id)
                if not poller.final:
                    await asyncio.sleep(FALLBACK_POLL_SECONDS)
                return

    async def _pull(self, poller: _Poller) -> None:
        """Read every event from the poller's cursor on (one query when nothing is new)."""
        while True:
            try:
                page = await self._read(poller.task_id, poller.cursor)
            except ServiceUnavailable as exc:
                poller.stall(exc)
                raise
            poller.answered(page)
            if page.final or len(page.events) < PAGE:
                return

    async def _running(self, task_id: str) -> bool:
        try:
            description = await self._client.get_workflow_handle(task_id).describe()
        except RPCError:
            return True
        return description.close_time is None


@dataclass
class _Backoff:
    """The poller's retries: stalls wait without end, other failures a few times."""

    failures: int = 0
    stalls: int = 0

    def after(self, poller: _Poller, exc: Exception) -> float | None:
        """Seconds to wait before trying again, or None to give up."""
        stalled = _stalled(poller.task_id, exc)
        if stalled is not None:
            poller.stall(stalled)
            delay = RETRY_SECONDS[min(self.stalls, len(RETRY_SECONDS) - 1)]
            self.stalls += 1
        elif self.failures < len(RETRY_SECONDS):
            delay = RETRY_SECONDS[self.failures]
            self.failures += 1
        else:
            return None
        expected = isinstance(exc, ServiceError | RPCError)
        log.log(
            logging.INFO if expected else logging.WARNING,
            "following %s: %s; again in %.1f s",
            poller.task_id,
            exc,
            delay,
            exc_info=not expected,
        )
        return delay


def _stalled(task_id: str, exc: Exception) -> ServiceUnavailable | None:
    """Why the events cannot be read for now (no worker, Temporal unreachable), or None."""
    if isinstance(exc, ServiceUnavailable):
        return exc
    if isinstance(exc, RPCError) and exc.status == RPCStatusCode.UNAVAILABLE:
        return ServiceUnavailable(f"cannot reach Temporal to follow {task_id}: {exc.message}")
    return None


def _as_service_error(task_id: str, exc: Exception) -> ServiceError:
    if isinstance(exc, ServiceError):
        return exc
    return ServiceUnavailable(f"cannot follow {task_id}: {exc}")
