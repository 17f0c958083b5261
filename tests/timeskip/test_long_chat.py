"""A chat far past one run's limits, through the real message path, in seconds.

Every turn is what the gateway does: a `post_message` update records the user's
message and a `record_turn` update records the answer (a delegating turn records
its tool call and task first, and the task's events follow by
`record_task_events`). The user types ahead of the answers, as a real one may: up
to `TYPE_AHEAD` turns are posted and not yet answered. The answers are pipelined:
each record names its step, so it goes out before the one it follows is
acknowledged and the session applies them in order (`workflows/_turns.py`); a
delegating turn still waits for its tool call to be recorded before its next step,
as the gateway must. With the posts, at most 10 updates are in flight (Temporal's
limit per workflow), and turns are open whenever the session continues as new.
Measured on 2 quiet cores (docs/benchmarks.md, "The 5,000-turn conversation"):
5.5-6.3 ms a turn with each record waiting for the one before it, 4.0-4.3 ms pipelined.
`SWITCHBOARD_LONG_CHAT_TURNS` runs fewer or more turns.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from entrypoints.worker import workflow_runner
from switchboard.contracts import ChatToolCall
from switchboard.conversation import (
    EntriesPage,
    EntriesRequest,
    EntryKind,
    NewEntry,
    PostMessage,
    PostResult,
    RecordResult,
    RecordTurn,
    SessionStart,
    SessionState,
    SessionTask,
    Stamp,
    TaskEventsInput,
    TaskEventsResult,
)
from switchboard.models import EventKind, Phase, TaskEvent
from switchboard.wire import Conversation
from workflows import ConversationWorkflow

TURNS = int(os.environ.get("SWITCHBOARD_LONG_CHAT_TURNS", "5000"))
"""Issue #9's conversation: 5,000 turns are 10,000 message updates plus the task
events, some twenty runs of the default 2,000 history events; about 22-25 s on 2 quiet
cores (docs/benchmarks.md)."""
TYPE_AHEAD = 6
RECORDS_AHEAD = 4
"""Records in flight at once (a turn's steps name their order); with the posts, within
Temporal's 10 updates in flight per workflow."""
DELEGATE_EVERY = 100
"""Every 100th turn starts a task; its events reach the session afterwards."""
RUNNER = "gateway-1"
OWNER = "dana"


@dataclass
class Chat:
    """The user and the gateway of one session, writing only through updates."""

    handle: WorkflowHandle[Any, Any]
    stamps: list[Stamp] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    turns: dict[int, PostResult] = field(default_factory=dict)
    """Posts by the turn the workflow gave them (concurrent posts arrive in any order)."""
    turn_of: dict[int, int] = field(default_factory=dict)
    """The turn each message (by its number) became."""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    failed: BaseException | None = None
    pipelined: bool = True
    """False: each turn answered after the last one's records are acknowledged, as the
    gateway does (no record ever waits in the session for the ones before it)."""
    sending: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(RECORDS_AHEAD))

    async def post(self, n: int) -> PostResult:
        post = PostMessage(by=OWNER, content=f"message {n}", runner=RUNNER, request_id=f"m{n}")
        try:
            result: PostResult = await self.handle.execute_update(
                Conversation.POST_MESSAGE, post, result_type=PostResult
            )
        except BaseException as exc:
            self.failed = exc
            raise
        finally:
            self.arrived.set()
        self.stamps.append(result.stamp)
        self.turns[result.turn] = result
        self.turn_of[n] = result.turn
        return result

    async def posted(self, turn: int) -> PostResult:
        while turn not in self.turns:
            if self.failed is not None:
                raise AssertionError(f"a post failed before turn {turn}") from self.failed
            self.arrived.clear()
            await self.arrived.wait()
        return self.turns[turn]

    async def record(
        self, turn: int, step: int, entries: list[NewEntry], **extra: Any
    ) -> RecordResult:
        record = RecordTurn(turn=turn, runner=RUNNER, entries=entries, step=step, **extra)
        async with self.sending:
            result: RecordResult = await self.handle.execute_update(
                Conversation.RECORD_TURN, record, result_type=RecordResult
            )
        self.stamps.append(result.stamp)
        return result

    async def answer(self, turn: int) -> None:
        step = 0
        if turn % DELEGATE_EVERY == 0:
            await self.delegate(turn)
            step = 1
        reply = NewEntry(role="assistant", content=f"answer {turn}", ends_turn=True)
        result = await self.record(turn, step, [reply], finish=True)
        assert result.next_turn in (None, turn + 1)

    async def delegate(self, turn: int) -> None:
        task_id = f"task-{turn}"
        call = ChatToolCall(id=f"call-{turn}", name="delegate", arguments='{"goal": "g"}')
        steps = [
            NewEntry(role="assistant", tool_calls=[call]),
            NewEntry(role="tool", tool_call_id=call.id, tool_name="delegate", content=task_id),
        ]
        await self.record(turn, 0, steps, tasks=[SessionTask(task_id=task_id, goal="g")])
        self.tasks.append(task_id)

    async def task_events(self, task_id: str) -> None:
        """Events 0-1, then 1-2 again as a watcher that lost its place sends them."""
        events = [task_event(n) for n in range(3)]
        for batch, next_offset, fresh in ((events[:2], 2, [0, 1]), (events[1:], 3, [2])):
            update = TaskEventsInput(
                task_id=task_id, events=batch, next_offset=next_offset, phase=Phase.RUNNING
            )
            result: TaskEventsResult = await self.handle.execute_update(
                Conversation.RECORD_TASK_EVENTS, update, result_type=TaskEventsResult
            )
            assert result.accepted == fresh
            self.stamps.append(result.stamp)

    async def converse(self, turns: int) -> None:
        """The user types ahead while the gateway answers each turn in order (pipelined:
        without waiting for the acknowledgement of the turn before)."""
        room = asyncio.Semaphore(TYPE_AHEAD)

        async def user() -> None:
            posting = []
            for n in range(1, turns + 1):
                await room.acquire()
                posting.append(asyncio.create_task(self.post(n)))
            await asyncio.gather(*posting)

        typing = asyncio.create_task(user())
        answering: list[asyncio.Task[None]] = []
        for turn in range(1, turns + 1):
            await self.posted(turn)
            answered = asyncio.create_task(self.answer(turn))
            answered.add_done_callback(lambda _: room.release())
            answering.append(answered)
            if turn % DELEGATE_EVERY == 0:
                await answered  # the session knows the task before its events come
                await self.task_events(f"task-{turn}")
            elif not self.pipelined:
                await answered
            await asyncio.sleep(0)  # this turn's record goes out before the next one's
        await asyncio.gather(typing, *answering)


def task_event(offset: int) -> TaskEvent:
    return TaskEvent(
        offset=offset,
        at=datetime(2026, 1, 1, tzinfo=UTC),
        kind=EventKind.PHASE,
        message=f"event {offset}",
        phase=Phase.RUNNING,
    )


async def entries(handle: WorkflowHandle[Any, Any], from_offset: int) -> EntriesPage:
    request = EntriesRequest(from_offset=from_offset, limit=2000)
    page: EntriesPage = await handle.query(Conversation.ENTRIES, request, result_type=EntriesPage)
    return page


@asynccontextmanager
async def chat_worker(client: Client, *, sandboxed: bool = False) -> AsyncIterator[str]:
    """A worker as production registers the conversation (outside the SDK's sandbox), or
    with `sandboxed` inside it, where a clock, random or I/O call would fail the run."""
    queue = f"chat-{uuid.uuid4()}"
    runners: dict[str, Any] = {"workflow_runner": workflow_runner()}
    if sandboxed:
        runners["unsandboxed_workflow_runner"] = workflow_runner()
    async with Worker(client, task_queue=queue, workflows=[ConversationWorkflow], **runners):
        yield queue


async def test_a_long_conversation_continues_as_new_losing_nothing(
    env: WorkflowEnvironment,
) -> None:
    async with chat_worker(env.client) as queue:
        handle = await env.client.start_workflow(
            Conversation.WORKFLOW,
            # As the gateway starts one: with an idle timeout (72 h), so its timer runs too.
            SessionStart(owner=OWNER, idle_seconds=72 * 3600),
            id=f"session-{uuid.uuid4().hex}",
            task_queue=queue,
        )
        chat = Chat(handle)
        began = time.perf_counter()
        await chat.converse(TURNS)
        elapsed = time.perf_counter() - began
        state: SessionState = await handle.query(Conversation.STATE, result_type=SessionState)
        # The last message again under its request id, as a client retrying it would.
        again = PostMessage(by=OWNER, content="again", runner=RUNNER, request_id=f"m{TURNS}")
        retried = await handle.execute_update(
            Conversation.POST_MESSAGE, again, result_type=PostResult
        )
        tail = await entries(handle, state.first_offset)
        gap = await entries(handle, 0)
    print(f"\n{TURNS} turns in {elapsed:.1f} s: {elapsed / TURNS * 1000:.1f} ms a turn")

    delegated = TURNS // DELEGATE_EVERY
    total = 2 * TURNS + 2 * delegated + 3 * delegated
    # Every update's stamp tiles the offsets: none lost, none given twice.
    covered = sorted((s.first_offset, s.count) for s in chat.stamps)
    starts = list(accumulate(count for _, count in covered))
    assert [first for first, _ in covered] == [0, *starts[:-1]]
    assert state.next_offset == total == starts[-1]
    assert state.runs >= max(2, TURNS // 300), f"only {state.runs} runs"
    assert state.turns == [] and not state.closed
    assert [t.task_id for t in state.tasks] == chat.tasks
    assert all(t.cursor == 3 and t.phase is Phase.RUNNING for t in state.tasks)
    # A retried post of the last message is known across every continue-as-new.
    last = chat.turns[chat.turn_of[TURNS]]
    assert retried.duplicate and retried.turn == last.turn and retried.stamp == last.stamp
    # The newest entries are readable in order; older ones are one gap pointing at them.
    assert [e.offset for e in tail.entries] == list(range(state.first_offset, total))
    answers = [e.content for e in tail.entries if e.ends_turn]
    assert answers[-2:] == [f"answer {TURNS - 1}", f"answer {TURNS}"]
    assert state.summary == f"Entries before offset {state.first_offset} are no longer in context."
    assert gap.entries[0].kind is EntryKind.GAP
    assert gap.entries[0].data["resume_offset"] == state.first_offset
