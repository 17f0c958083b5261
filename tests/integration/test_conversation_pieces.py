"""The conversation's pure pieces, without Temporal: the hub's ordering, the prompt's
shape, the context window and which task events enter the chat."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from chat_gateway._hub import SessionHub, StreamItem, TokenDelta
from chat_gateway._prompt import build_messages, unanswered_calls
from switchboard.contracts import ChatToolCall
from switchboard.conversation import (
    EntryKind,
    SessionEntry,
    TurnContext,
    is_notable,
    select_context,
)
from switchboard.models import EventKind, Phase, TaskEvent

AT = datetime(2026, 11, 27, tzinfo=UTC)


def entry(offset: int, turn: int | None = None, **fields: object) -> SessionEntry:
    values: dict[str, object] = {"role": "user", "content": f"e{offset}"}
    values.update(fields)
    return SessionEntry(offset=offset, at=AT, turn=turn, **values)


def drain(queue: asyncio.Queue[StreamItem | None]) -> list[StreamItem]:
    items = []
    while not queue.empty():
        item = queue.get_nowait()
        assert item is not None
        items.append(item)
    return items


async def test_the_hub_publishes_entries_once_in_offset_order() -> None:
    async def no_fill(start: int, stop: int) -> list[SessionEntry]:
        raise AssertionError("nothing is missing")

    hub = SessionHub(5, no_fill, [])
    subscription = hub.subscribe()
    hub.offer([entry(6), entry(7)])  # early: held until 5 arrives
    assert drain(subscription.queue) == []
    hub.offer([entry(5), entry(6), entry(3)])  # 6 again, 3 long gone
    ids = [i.id for i in drain(subscription.queue)]
    assert ids == [5, 6, 7]
    assert [e.offset for e in hub.recent] == [5, 6, 7]


async def test_the_hub_reads_a_gap_left_by_another_writer() -> None:
    async def fill(start: int, stop: int) -> list[SessionEntry]:
        return [entry(o) for o in range(start, stop)]

    hub = SessionHub(0, fill, [])
    subscription = hub.subscribe()
    hub.offer([entry(3)])
    await asyncio.sleep(0.2)
    assert [i.id for i in drain(subscription.queue)] == [0, 1, 2, 3]


async def test_tokens_build_a_draft_that_the_recorded_step_replaces() -> None:
    async def no_fill(start: int, stop: int) -> list[SessionEntry]:
        return []

    hub = SessionHub(0, no_fill, [])
    hub.token(TokenDelta(turn=1, step=1, seq=0, text="Hel"))
    hub.token(TokenDelta(turn=1, step=1, seq=1, text="lo"))
    _, draft, _ = hub.snapshot()
    assert draft is not None and draft.text == "Hello" and draft.seq == 1
    hub.offer([entry(0, turn=1, role="assistant", content="Hello", step=1)])
    _, draft, _ = hub.snapshot()
    assert draft is None and hub.step_finished(1, 1)


async def test_a_slow_subscriber_is_cut_off_not_the_hub() -> None:
    async def no_fill(start: int, stop: int) -> list[SessionEntry]:
        return []

    hub = SessionHub(0, no_fill, [])
    slow = hub.subscribe()
    for seq in range(10_001):
        hub.token(TokenDelta(turn=1, step=1, seq=seq, text="x"))
    assert slow.overflowed
    items = drain_until_none(slow.queue)
    assert items[-1] is None  # the reader is told to end and resume from its offset


def drain_until_none(queue: asyncio.Queue[StreamItem | None]) -> list[StreamItem | None]:
    items: list[StreamItem | None] = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def context(entries: list[SessionEntry], turn: int) -> TurnContext:
    return TurnContext(session_id="session-x", turn=turn, owner="ann", entries=entries, tasks=[])


def test_tool_results_sit_right_after_their_call_and_orphans_go() -> None:
    call = ChatToolCall(id="c1", name="list_tasks", arguments="{}")
    lost = ChatToolCall(id="c9", name="list_tasks", arguments="{}")
    entries = [
        entry(0, 1, content="status?"),
        entry(1, 1, role="assistant", content="", tool_calls=[call], step=1),
        entry(
            2,
            None,
            kind=EntryKind.TASK_EVENT,
            role="system",
            content="plan",
            task_id="task-1",
            event=EventKind.PLAN,
        ),
        entry(3, 1, role="tool", content="none", tool_call_id="c1", tool_name="list_tasks"),
        entry(4, 1, role="tool", content="orphan", tool_call_id="c7"),
        entry(5, 1, role="assistant", content="checking", tool_calls=[lost], step=2),
    ]
    roles = [m["role"] for m in build_messages(context(entries, 1))]
    assert roles == ["system", "user", "assistant", "tool", "system", "assistant"]
    messages = build_messages(context(entries, 1))
    assert messages[-1] == {"role": "assistant", "content": "checking"}
    step, pending = unanswered_calls(context(entries, 1))
    assert step == 2 and [c.id for c in pending] == ["c9"]


def test_a_queued_question_is_not_in_an_earlier_turns_context() -> None:
    entries = [entry(0, 1, content="first"), entry(1, 2, content="second")]
    assert [e.content for e in select_context(entries, 1)] == ["first"]
    assert [e.content for e in select_context(entries, 2)] == ["first", "second"]


def test_a_question_sits_before_its_own_answer() -> None:
    entries = [
        entry(0, 1, content="first"),
        entry(1, 2, content="second"),  # posted while turn 1 was answered
        entry(2, 1, role="assistant", content="answer 1", step=1),
        entry(3, 2, role="assistant", content="answer 2", step=1),
    ]
    texts = [m["content"] for m in build_messages(context(entries, 2))[1:]]
    assert texts == ["first", "answer 1", "second", "answer 2"]


def test_which_task_events_enter_the_conversation() -> None:
    def event(kind: EventKind, **data: object) -> TaskEvent:
        return TaskEvent(offset=0, at=AT, kind=kind, message="m", data=data)

    assert is_notable(event(EventKind.APPROVAL_NEEDED))
    assert is_notable(event(EventKind.MERGED))
    assert is_notable(event(EventKind.REVIEW, verdict="approve"))
    assert not is_notable(event(EventKind.REVIEW))  # a reviewer's step
    assert not is_notable(event(EventKind.SUBAGENT_STEP))
    assert is_notable(event(EventKind.PHASE, phase=Phase.RUNNING.value))
    assert not is_notable(event(EventKind.PHASE, phase=Phase.AWAITING_APPROVAL.value))
