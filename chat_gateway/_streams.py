"""Reading a session for its clients: the backlog from the workflow, then the hub live.

The workflow is the truth and the hub a cache: a client first reads what it
missed from the workflow (`SessionStreams.backlog`), then takes the hub's live
items, and reads from the workflow again for any entry another gateway wrote.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from chat_gateway._hub import SessionHub, StreamItem, Subscription
from chat_gateway._model_errors import ModelCallFailed
from chat_gateway._store import SessionStore
from switchboard.conversation import CONTEXT_ENTRIES, SessionEntry, SessionState
from switchboard.errors import ServiceUnavailable

__all__ = ["BACKLOG_PAGE", "UPDATES_LOOKBACK", "SessionStreams", "answer_text"]

BACKLOG_PAGE = 500
UPDATES_LOOKBACK = 200
"""Entries read back to find the task events an answer-per-message client missed."""

_Drafted = tuple[int, int, int]
"""(turn, step, seq) of the draft a client was sent when it joined."""


class SessionStreams:
    """Session streams read through one store.

    Args:
        store: Reads the session's entries from its workflow.
    """

    def __init__(self, store: SessionStore) -> None:
        self._store = store

    async def backlog(
        self, session_id: str, start: int, stop: int | None
    ) -> AsyncIterator[SessionEntry]:
        """Entries `[start, stop)` from the workflow (to the end without `stop`)."""
        offset = start
        while stop is None or offset < stop:
            page = await self._store.entries(session_id, offset, BACKLOG_PAGE)
            for entry in page.entries:
                if stop is not None and entry.offset >= stop:
                    return
                yield entry
            if not page.entries or page.next_offset <= offset:
                return
            if stop is None and len(page.entries) < BACKLOG_PAGE:
                return
            offset = page.next_offset

    async def hub(self, session_id: str, state: SessionState) -> SessionHub:
        """A live hub for the session, seeded with its newest entries (so a turn's
        context needs no query) and filling any gap from the workflow."""

        async def fill(start: int, stop: int) -> list[SessionEntry]:
            return [e async for e in self.backlog(session_id, start, stop)]

        start = max(state.first_offset, state.next_offset - CONTEXT_ENTRIES)
        recent = [e async for e in self.backlog(session_id, start, None)]
        next_offset = recent[-1].offset + 1 if recent else state.next_offset
        return SessionHub(next_offset, fill, [e for e in recent if e.kind != "gap"])

    async def updates_before(self, session_id: str, offset: int) -> list[str]:
        """Notable task events recorded since the previous answer, one line each."""
        start = max(0, offset - UPDATES_LOOKBACK)
        entries = [e async for e in self.backlog(session_id, start, offset)]
        since = 0
        for index, entry in enumerate(entries):
            if entry.turn is not None and entry.role != "user":
                since = index + 1
        return [
            f"- [{e.task_id}] {e.event.value if e.event else 'event'}: {e.content}"
            for e in entries[since:]
            if e.kind == "task_event"
        ]

    async def replay(
        self, session_id: str, hub: SessionHub, subscription: Subscription, from_offset: int
    ) -> AsyncIterator[StreamItem]:
        """Backlog from `from_offset`, a snapshot of the hub, `ready`, then live items."""
        sent = from_offset
        async for entry in self.backlog(session_id, sent, None):
            yield StreamItem.of_entry(entry)
            sent = entry.offset + 1 if entry.kind != "gap" else _resume_offset(entry)
        tasks, draft, running = hub.snapshot()
        for update in tasks:
            yield StreamItem(event="task", data=update.model_dump(mode="json"))
        if running is not None:
            yield StreamItem(event="turn", data={"turn": running, "running": True})
        drafted: _Drafted | None = None
        if draft is not None and not hub.step_finished(draft.turn, draft.step):
            drafted = (draft.turn, draft.step, draft.seq)
            yield StreamItem(event="draft", data=draft.model_dump(mode="json"))
        yield StreamItem(event="ready", data={"next_offset": sent})
        async for item in self._live(session_id, hub, subscription, sent, drafted):
            yield item

    async def _live(
        self,
        session_id: str,
        hub: SessionHub,
        subscription: Subscription,
        sent: int,
        drafted: _Drafted | None,
    ) -> AsyncIterator[StreamItem]:
        finished: set[tuple[int, int]] = set()
        while True:
            item = await subscription.get()
            if item is None:
                return  # overflowed or shutting down: the client resumes from `sent`
            if item.event == "entry":
                assert item.id is not None
                if item.id < sent:
                    continue
                if item.id > sent:  # written elsewhere: read the gap from the workflow
                    async for entry in self.backlog(session_id, sent, item.id):
                        yield StreamItem.of_entry(entry)
                entry = SessionEntry.model_validate(item.data)
                if entry.role == "assistant" and entry.turn is not None and entry.step is not None:
                    finished.add((entry.turn, entry.step))
                sent = item.id + 1
            elif item.event == "token" and _token_seen(item, hub, finished, drafted):
                continue
            yield item


def _token_seen(
    item: StreamItem, hub: SessionHub, finished: set[tuple[int, int]], drafted: _Drafted | None
) -> bool:
    """The client has this token already: its step is recorded, or it came in the draft."""
    turn, step, seq = item.data["turn"], item.data["step"], item.data["seq"]
    if (turn, step) in finished or hub.step_finished(turn, step):
        return True
    return drafted is not None and (turn, step) == drafted[:2] and seq <= drafted[2]


async def answer_text(subscription: Subscription, turn: int) -> AsyncIterator[str]:
    """The text of `turn`'s answer as it streams: tokens, then recorded text not streamed.

    Raises:
        ServiceUnavailable: The gateway stopped before the answer was complete.
        ModelCallFailed: The model did not answer (its notice is recorded too).
    """
    said = False
    streamed: set[int] = set()
    while True:
        item = await subscription.get()
        if item is None:
            raise ServiceUnavailable("the gateway stopped before the answer was complete")
        if item.event == "token" and item.data["turn"] == turn:
            if item.data["step"] not in streamed and said:
                yield "\n\n"
            streamed.add(item.data["step"])
            said = True
            yield str(item.data["text"])
        elif item.event == "entry" and item.data.get("turn") == turn:
            entry = SessionEntry.model_validate(item.data)
            failed = ModelCallFailed.from_entry_data(entry.data) if entry.is_error else None
            if failed is not None and entry.ends_turn:
                raise failed
            text = _unstreamed_text(entry, streamed)
            if text:
                yield ("\n\n" if said else "") + text
                said = True
            if entry.ends_turn:
                return


def _unstreamed_text(entry: SessionEntry, streamed: set[int]) -> str:
    if entry.role not in ("assistant", "system"):
        return ""
    if entry.role == "assistant" and entry.step in streamed:
        return ""
    return entry.content


def _resume_offset(gap: SessionEntry) -> int:
    resume = gap.data.get("resume_offset")
    return int(resume) if isinstance(resume, int) else gap.offset + 1
