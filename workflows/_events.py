"""The task's event log: ordered, offset-addressed, bounded.

Pure code kept in workflow state. Offsets only grow. The log keeps the newest
`limit` events; when it drops older ones, a reader asking for a dropped offset
gets one `gap` event saying how many it missed, then everything still held.
That is the whole retention rule: phase, approval and merge facts are also in
`TaskStatus`, so a gap never hides the state of the task.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import Any

from switchboard.models import EventKind, EventsPage, Phase, TaskEvent

EVENT_LOG_LIMIT = 2_000


class EventLog:
    def __init__(self, limit: int = EVENT_LOG_LIMIT) -> None:
        self._limit = limit
        self._events: deque[TaskEvent] = deque()
        self._next_offset = 0

    @property
    def next_offset(self) -> int:
        return self._next_offset

    @property
    def first_offset(self) -> int:
        return self._events[0].offset if self._events else self._next_offset

    def append(
        self,
        kind: EventKind,
        message: str,
        *,
        at: datetime,
        phase: Phase | None = None,
        subagent: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> TaskEvent:
        event = TaskEvent(
            offset=self._next_offset,
            at=at,
            kind=kind,
            message=message,
            phase=phase,
            subagent=subagent,
            data=data or {},
        )
        self._events.append(event)
        self._next_offset += 1
        while len(self._events) > self._limit:
            self._events.popleft()
        return event

    def page(self, from_offset: int, limit: int, *, final: bool) -> EventsPage:
        first = self.first_offset
        events: list[TaskEvent] = []
        if from_offset < first:
            missed = first - from_offset
            events.append(
                TaskEvent(
                    offset=from_offset,
                    at=self._events[0].at if self._events else datetime.min,
                    kind=EventKind.GAP,
                    message=f"{missed} older events were dropped by the retention limit",
                    data={"dropped": missed, "resume_offset": first},
                )
            )
            from_offset = first
        start = from_offset - first
        chosen = [e for i, e in enumerate(self._events) if i >= start][: limit - len(events)]
        events.extend(chosen)
        next_offset = chosen[-1].offset + 1 if chosen else max(from_offset, first)
        return EventsPage(
            events=events,
            next_offset=next_offset,
            first_offset=first,
            final=final and next_offset >= self._next_offset,
        )
