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
own offset at its own pace: a slow one never holds up the poller or the others,
and one that falls behind the kept window (or asks for older events) reads the
missing pages itself. While an events query goes unanswered (no worker within
the query timeout, or Temporal down) the poller keeps trying; an impatient
subscriber (`task watch`, the SSE endpoint: a person wants to know) ends with
`ServiceUnavailable`, a patient one (the gateway's watchers) waits. The poller
stops when its last subscriber leaves or the task ends; after
`len(RETRY_SECONDS)` failures in a row it stops and every subscriber gets the
error (a subscriber that wants to keep following subscribes again, which starts
a new poller).
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
from temporalio.service import RPCError

from switchboard.errors import NotFound, ServiceError, ServiceUnavailable
from switchboard.models import EventsPage, TaskEvent

__all__ = [
    "KEPT_EVENTS",
    "PAGE",
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
class EventBatch:
    """Events for one subscriber, in offset order; `next_offset` is its resume point."""

    events: list[TaskEvent]
    next_offset: int
    final: bool = False


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

    def kept_from(self, offset: int) -> list[TaskEvent]:
        start = bisect_left(self.events, offset, key=lambda e: e.offset)
        return self.events[start : start + PAGE]


class Subscription:
    """One subscriber's view of a task's events, from its own offset.

    Iterate `batches()` (or `events()`); leave with `close()` (the `follow`
    context manager does that).
    """

    def __init__(
        self, followers: TaskFollowers, poller: _Poller, offset: int, *, patient: bool
    ) -> None:
        self.offset = offset
        self.caught_up = asyncio.Event()
        """Set once every event that existed when the subscription began was handed out
        (and the consumer asked for more)."""
        self._followers = followers
        self._poller = poller
        self._patient = patient
        self._stale = poller.unanswered
        """A stall from before this subscriber came: asked about again, not believed."""
        self._closed = False

    async def batches(self) -> AsyncIterator[EventBatch]:
        """Batches in offset order until the task ended and all were handed out.

        Raises:
            ServiceError: The poller gave up (the task vanished, or Temporal kept
                failing); subscribe again to retry.
            ServiceUnavailable: An events query went unanswered (no worker, or
                Temporal is down) and the subscription is not `patient`.
        """
        poller = self._poller
        while True:
            wake = poller.wake
            batch = await self._take()
            if batch is None:  # nothing new yet
                if poller.pulled:
                    self.caught_up.set()
                await wake.wait()
                continue
            self.offset = max(self.offset, batch.next_offset)
            if batch.events:
                yield batch
            if batch.final:
                self.caught_up.set()
                return

    async def _take(self) -> EventBatch | None:
        """The next batch (empty and final once the task ended), or None to wait."""
        poller = self._poller
        if self.offset < poller.first:
            return await self._read_missed()
        if self.offset < poller.cursor:
            events = poller.kept_from(self.offset)
            upto = events[-1].offset + 1 if len(events) == PAGE else poller.cursor
            return EventBatch(events, upto, poller.final and upto >= poller.cursor)
        if poller.error is not None:
            raise poller.error
        if poller.final:
            return EventBatch([], self.offset, final=True)
        if poller.unanswered is None or self._patient:
            return None
        if poller.unanswered is not self._stale:
            raise poller.unanswered
        self._stale = None
        await self._ask_again()
        return EventBatch([], self.offset)

    async def events(self) -> AsyncIterator[TaskEvent]:
        """`batches()` one event at a time."""
        async for batch in self.batches():
            for event in batch.events:
                yield event

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._followers._leave(self._poller)

    async def _ask_again(self) -> None:
        # The poller may wait on an idle history long after workers came back: one
        # query now says whether they answer (and raises if they still do not).
        poller = self._poller
        page = await self._followers._catch_up(poller.task_id, poller.cursor)
        poller.unanswered = None
        poller.keep(page)

    async def _read_missed(self) -> EventBatch:
        # Older than what the poller keeps: this subscriber alone needs these.
        # The poller's state says when the task ends, not this page.
        page = await self._followers._catch_up(self._poller.task_id, self.offset)
        missed = [e for e in page.events if e.offset < self._poller.first]
        if not missed:
            return EventBatch([], self._poller.first)
        return EventBatch(missed, max(self.offset, missed[-1].offset + 1))


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
            patient: Keep waiting while no worker answers (a watcher that outlives
                outages); otherwise such a stall ends the subscription with
                `ServiceUnavailable` (a person watching wants to know).
        """
        poller = self._pollers.get(task_id)
        if poller is None:
            poller = _Poller(task_id, first=from_offset, cursor=from_offset)
            self._pollers[task_id] = poller
            self.stats.pollers_started += 1
            poller.task = asyncio.create_task(self._run(poller), name=f"follow {task_id}")
        poller.subscribers += 1
        return Subscription(self, poller, from_offset, patient=patient)

    @contextlib.asynccontextmanager
    async def follow(
        self, task_id: str, from_offset: int = 0, *, patient: bool = False
    ) -> AsyncIterator[Subscription]:
        subscription = self.subscribe(task_id, from_offset, patient=patient)
        try:
            yield subscription
        finally:
            subscription.close()

    async def watch(self, task_id: str, from_offset: int = 0) -> AsyncIterator[TaskEvent]:
        """Events from `from_offset` as they happen, until the task has ended."""
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
        failures = 0
        try:
            while not poller.final:
                try:
                    await self._first_pull(poller)
                    if not poller.final:
                        await self._follow_history(poller)
                    failures = 0
                except NotFound as exc:
                    poller.error = exc
                    return
                except Exception as exc:  # anything else is retried, then reported
                    if failures >= len(RETRY_SECONDS):
                        poller.error = _as_service_error(poller.task_id, exc)
                        return
                    expected = isinstance(exc, ServiceError | RPCError)
                    log.log(
                        logging.INFO if expected else logging.WARNING,
                        "following %s: %s; again in a moment",
                        poller.task_id,
                        exc,
                        exc_info=not expected,
                    )
                    await asyncio.sleep(RETRY_SECONDS[failures])
                    failures += 1
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
            await history.fetch_next_page()
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
                poller.unanswered = exc
                poller.notify()
                raise
            poller.unanswered = None
            poller.keep(page)
            if page.final or len(page.events) < PAGE:
                return

    async def _running(self, task_id: str) -> bool:
        try:
            description = await self._client.get_workflow_handle(task_id).describe()
        except RPCError:
            return True
        return description.close_time is None


def _as_service_error(task_id: str, exc: Exception) -> ServiceError:
    if isinstance(exc, ServiceError):
        return exc
    return ServiceUnavailable(f"cannot follow {task_id}: {exc}")
