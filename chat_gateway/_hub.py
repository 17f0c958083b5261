"""One session's live fan-out inside the gateway: entries in offset order, tokens,
task updates, turn markers; any number of clients, one source.

The hub is a cache, never the truth: entries reach it after the workflow
stamped them, and a subscriber reads its backlog from the workflow, so a hub
that is lost (a restarted gateway) loses nothing but token previews.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import Field

from switchboard.conversation import CONTEXT_ENTRIES, SessionEntry
from switchboard.models import Model, TaskEvent, TaskStatus

__all__ = [
    "Draft",
    "SessionHub",
    "StreamItem",
    "Subscription",
    "TaskUpdate",
    "TokenDelta",
    "TurnMarker",
]

log = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 10_000
"""Items a slow client may fall behind by; past it the client is cut off and resumes
from its last offset, which costs it nothing but a reconnect."""
GAP_FILL_DELAY_SECONDS = 0.05
"""An entry written by this process arrives within milliseconds; one still missing
after this was written elsewhere (another gateway) and is read from the workflow."""

EventName = Literal["entry", "token", "draft", "task", "turn", "ready", "error"]


class TokenDelta(Model):
    """A piece of an assistant message while the model streams it (not durable)."""

    turn: int
    step: int
    seq: int
    text: str


class Draft(TokenDelta):
    """Everything streamed so far of a step: sent to a client that joins mid-stream."""


class TurnMarker(Model):
    turn: int
    running: bool


class TaskUpdate(Model):
    """A task's live state: its latest status and the events that moved it."""

    task_id: str
    status: TaskStatus | None = None
    events: list[TaskEvent] = Field(default_factory=list)


class StreamItem(Model):
    """One item of a session's event stream (an SSE event or a WebSocket frame)."""

    event: EventName
    id: int | None = None
    """The entry's offset (only entries have one: the resume point)."""
    data: dict[str, Any]

    @classmethod
    def of_entry(cls, entry: SessionEntry) -> StreamItem:
        return cls(event="entry", id=entry.offset, data=entry.model_dump(mode="json"))


class Subscription:
    """A client's queue; `overflowed` means it must reconnect from its offset."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[StreamItem | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self.overflowed = False

    def put(self, item: StreamItem) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True
            self.queue.get_nowait()
            self.queue.put_nowait(None)  # wakes the reader, which then ends the stream

    async def get(self) -> StreamItem | None:
        return await self.queue.get()


Fill = Callable[[int, int], Awaitable[list[SessionEntry]]]


class SessionHub:
    """Publishes a session's entries exactly once each, in offset order.

    Args:
        next_offset: The session's next offset when the hub starts; earlier
            entries are the subscribers' backlog, read from the workflow.
        fill: Reads entries `[from, to)` from the workflow, for gaps left by
            writers in other processes.
        recent: The entries just before `next_offset` (the newest of them last).
    """

    def __init__(self, next_offset: int, fill: Fill, recent: list[SessionEntry]) -> None:
        self.next_offset = next_offset
        self.recent: deque[SessionEntry] = deque(recent, maxlen=CONTEXT_ENTRIES)
        """The newest entries, in order up to `next_offset`: a turn's context without a query."""
        self._fill = fill
        self._pending: dict[int, SessionEntry] = {}
        self._subscribers: set[Subscription] = set()
        self._draft: Draft | None = None
        self._finished_steps: set[tuple[int, int]] = set()
        self._tasks: dict[str, TaskUpdate] = {}
        self._running_turn: int | None = None
        self._gap_task: asyncio.Task[None] | None = None

    # ---- subscribers ------------------------------------------------------------------

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def snapshot(self) -> tuple[list[TaskUpdate], Draft | None, int | None]:
        """Task states, the step being streamed and the running turn, for a new client."""
        return list(self._tasks.values()), self._draft, self._running_turn

    def step_finished(self, turn: int, step: int) -> bool:
        return (turn, step) in self._finished_steps

    # ---- publishing -------------------------------------------------------------------

    def offer(self, entries: list[SessionEntry]) -> None:
        """Entries stamped by the workflow, in any order and possibly seen before."""
        for entry in entries:
            if entry.offset >= self.next_offset:
                self._pending[entry.offset] = entry
        self._release()

    def token(self, delta: TokenDelta) -> None:
        if self._draft is None or (self._draft.turn, self._draft.step) != (delta.turn, delta.step):
            self._draft = Draft(turn=delta.turn, step=delta.step, seq=delta.seq, text="")
        self._draft = Draft(
            turn=delta.turn, step=delta.step, seq=delta.seq, text=self._draft.text + delta.text
        )
        self._broadcast(StreamItem(event="token", data=delta.model_dump(mode="json")))

    def turn(self, turn: int, *, running: bool) -> None:
        self._running_turn = turn if running else None
        if not running and self._draft is not None and self._draft.turn == turn:
            self._draft = None
        marker = TurnMarker(turn=turn, running=running)
        self._broadcast(StreamItem(event="turn", data=marker.model_dump(mode="json")))

    def task(self, update: TaskUpdate) -> None:
        known = self._tasks.get(update.task_id)
        status = update.status or (known.status if known else None)
        self._tasks[update.task_id] = TaskUpdate(task_id=update.task_id, status=status)
        self._broadcast(StreamItem(event="task", data=update.model_dump(mode="json")))

    def close(self) -> None:
        if self._gap_task is not None:
            self._gap_task.cancel()
        for subscription in list(self._subscribers):
            subscription.queue.put_nowait(None)

    # ---- internals --------------------------------------------------------------------

    def _release(self) -> None:
        self._drain()
        if self._pending and (self._gap_task is None or self._gap_task.done()):
            self._gap_task = asyncio.create_task(self._fill_gap())

    def _drain(self) -> None:
        while self.next_offset in self._pending:
            entry = self._pending.pop(self.next_offset)
            self.next_offset += 1
            self.recent.append(entry)
            if entry.role == "assistant" and entry.turn is not None and entry.step is not None:
                step = (entry.turn, entry.step)
                self._finished_steps.add(step)
                if self._draft is not None and (self._draft.turn, self._draft.step) == step:
                    self._draft = None
            self._broadcast(StreamItem.of_entry(entry))

    async def _fill_gap(self) -> None:
        await asyncio.sleep(GAP_FILL_DELAY_SECONDS)
        while self._pending:
            upto = min(self._pending)
            if upto > self.next_offset:
                try:
                    missing = await self._fill(self.next_offset, upto)
                except Exception:  # subscribers read their backlog from the workflow anyway
                    log.warning("cannot read entries %d..%d", self.next_offset, upto, exc_info=True)
                    await asyncio.sleep(1.0)
                    continue
                for entry in missing:
                    if entry.offset >= self.next_offset:
                        self._pending.setdefault(entry.offset, entry)
                if not missing:
                    await asyncio.sleep(GAP_FILL_DELAY_SECONDS)
            self._drain()

    def _broadcast(self, item: StreamItem) -> None:
        for subscription in list(self._subscribers):
            subscription.put(item)
