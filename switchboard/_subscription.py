"""One subscriber's view of a followed task (`switchboard.follow`): its own offset and pace.

A subscriber reads the poller's kept events from its own offset; one that fell
behind the kept window reads the missing pages itself. While the task's events
cannot be read (no worker answers its queries, Temporal is unreachable), an
impatient subscriber (a person watching) is told so once with a `FollowNotice`
and once more when they can be read again; the subscription goes on until the
task ends. A patient one (the gateway's watchers) just waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from switchboard.errors import ServiceError, ServiceUnavailable
from switchboard.models import EventsPage, FollowNotice, FollowNoticeKind, TaskEvent

__all__ = ["EventBatch", "PollerView", "Subscription"]


@dataclass
class EventBatch:
    """Events for one subscriber, in offset order; `next_offset` is its resume point.

    A batch with a `notice` carries no events: it says the following stalled or resumed.
    """

    events: list[TaskEvent]
    next_offset: int
    final: bool = False
    notice: FollowNotice | None = None


class PollerView(Protocol):
    """What a subscription reads of its task's poller."""

    task_id: str
    first: int
    cursor: int
    final: bool
    error: ServiceError | None
    pulled: bool
    unanswered: ServiceUnavailable | None
    wake: asyncio.Event

    def answered(self, page: EventsPage) -> None: ...

    def stall(self, why: ServiceUnavailable) -> None: ...

    def batch_from(self, offset: int) -> EventBatch: ...


CatchUp = Callable[[str, int], Awaitable[EventsPage]]
"""Reads one page of a task's events from an offset (counted as a catch-up query)."""


class Subscription:
    """One subscriber's view of a task's events, from its own offset.

    Iterate `batches()` (or `events()`); leave with `close()` (the `follow`
    context manager does that).
    """

    def __init__(
        self,
        poller: PollerView,
        offset: int,
        *,
        patient: bool,
        catch_up: CatchUp,
        leave: Callable[[], None],
    ) -> None:
        self.offset = offset
        self.caught_up = asyncio.Event()
        """Set once every event that existed when the subscription began was handed out
        (and the consumer asked for more)."""
        self._poller = poller
        self._patient = patient
        self._catch_up = catch_up
        self._leave = leave
        self._stale = poller.unanswered
        """A stall from before this subscriber came: asked about again, not believed."""
        self._told = False
        """This subscriber was told the following stalled (and not yet that it resumed)."""
        self._closed = False

    async def batches(self) -> AsyncIterator[EventBatch]:
        """Batches in offset order until the task ended and all were handed out.

        An impatient subscription also gets a batch with a `notice` (and no events)
        when the events stop being readable, and another when they are again.

        Raises:
            ServiceError: The poller gave up (the task vanished, or following failed
                in a way waiting does not mend); subscribe again to retry.
        """
        poller = self._poller
        while True:
            wake = poller.wake
            batch = self._back() or await self._take()
            if batch is None:  # nothing new yet
                if poller.pulled:
                    self.caught_up.set()
                batch = self._stalled()
                if batch is None:
                    await wake.wait()
                    continue
            self.offset = max(self.offset, batch.next_offset)
            if batch.events or batch.notice is not None:
                yield batch
            if batch.final:
                self.caught_up.set()
                return

    async def events(self) -> AsyncIterator[TaskEvent | FollowNotice]:
        """`batches()` one event (or notice) at a time."""
        async for batch in self.batches():
            if batch.notice is not None:
                yield batch.notice
            for event in batch.events:
                yield event

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._leave()

    async def _take(self) -> EventBatch | None:
        """The next batch (empty and final once the task ended), or None to wait."""
        poller = self._poller
        if self.offset < poller.first:
            return await self._read_missed()
        if self.offset < poller.cursor:
            return poller.batch_from(self.offset)
        if poller.error is not None:
            raise poller.error
        if poller.final:
            return EventBatch([], self.offset, final=True)
        if poller.unanswered is not None and poller.unanswered is self._stale:
            self._stale = None
            await self._ask_again()
            return EventBatch([], self.offset)
        return None

    def _stalled(self) -> EventBatch | None:
        """The notice that the events stopped being readable (once per stall)."""
        unanswered = self._poller.unanswered
        if self._patient or self._told or unanswered is None:
            return None
        self._told = True
        return self._notice(FollowNoticeKind.WORKER_UNAVAILABLE, str(unanswered))

    def _back(self) -> EventBatch | None:
        """The notice that the events are readable again, before any new event."""
        if not self._told or self._poller.unanswered is not None:
            return None
        self._told = False
        return self._notice(
            FollowNoticeKind.WORKER_BACK, f"{self._poller.task_id}: its events are readable again"
        )

    def _notice(self, kind: FollowNoticeKind, message: str) -> EventBatch:
        notice = FollowNotice(kind=kind, at=datetime.now(UTC), message=message)
        return EventBatch([], self.offset, notice=notice)

    async def _ask_again(self) -> None:
        # The poller may wait on an idle history long after workers came back: one
        # query now says whether they answer (if not, the stall stands, now believed).
        poller = self._poller
        try:
            page = await self._catch_up(poller.task_id, poller.cursor)
        except ServiceUnavailable as exc:
            poller.stall(exc)
            return
        poller.answered(page)

    async def _read_missed(self) -> EventBatch:
        # Older than what the poller keeps: this subscriber alone needs these.
        # The poller's state says when the task ends, not this page.
        page = await self._catch_up(self._poller.task_id, self.offset)
        missed = [e for e in page.events if e.offset < self._poller.first]
        if not missed:
            return EventBatch([], self._poller.first)
        return EventBatch(missed, max(self.offset, missed[-1].offset + 1))
