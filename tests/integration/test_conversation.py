"""The conversation engine on the real dev server: a `Gateway` in this process, real
workers, bwrap sandboxes, git, and the scripted model over HTTP through the real
`openai` client (streaming). Nothing in the path is mocked."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from temporalio.client import Client

from chat_gateway import Gateway, StreamItem
from switchboard.conversation import SessionEntry
from switchboard.model_server import ModelServerHandle
from switchboard.models import EventKind, Phase
from switchboard.settings import Settings

pytestmark = pytest.mark.integration

WAIT = 90.0


class Collector:
    """Reads a session stream in the background and keeps every item."""

    def __init__(self, stream: AsyncIterator[StreamItem]) -> None:
        self.items: list[StreamItem] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run(stream))

    async def _run(self, stream: AsyncIterator[StreamItem]) -> None:
        async for item in stream:
            self.items.append(item)
            self._changed.set()

    @property
    def entries(self) -> list[SessionEntry]:
        return [SessionEntry.model_validate(i.data) for i in self.items if i.event == "entry"]

    async def wait_for(
        self, predicate: Callable[[Collector], bool], what: str, timeout: float = WAIT
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self):
            if self._task.done():
                self._task.result()
                raise AssertionError(f"the stream ended before {what}")
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; entries: {self.entries}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def turn_ended(turn: int) -> Callable[[Collector], bool]:
    return lambda c: any(e.turn == turn and e.ends_turn for e in c.entries)


def task_event(kind: EventKind) -> Callable[[Collector], bool]:
    return lambda c: any(e.event is kind for e in c.entries)


def answer(collector: Collector, turn: int) -> str:
    return "\n".join(
        e.content for e in collector.entries if e.turn == turn and e.role == "assistant"
    )


@pytest.fixture
async def gateway(client: Client, settings: Settings, worker: None) -> AsyncIterator[Gateway]:
    gateway = Gateway(client, settings)
    try:
        yield gateway
    finally:
        await gateway.aclose()


async def test_delegate_keep_chatting_approve_and_see_the_merge(
    gateway: Gateway, repo: Path, model: ModelServerHandle
) -> None:
    model.configure(latency_ms=100)  # subagent steps take a while: the task runs during the chat
    info = await gateway.create_session("alice", repo=str(repo), title="slugify")
    stream = Collector(gateway.stream(info.session_id, "alice"))
    try:
        first = await gateway.post(info.session_id, "alice", "delegate: add a slugify helper")
        assert first.claimed and first.turn == 1
        await stream.wait_for(turn_ended(1), "the delegation turn")
        reply = answer(stream, 1)
        assert "handing this to a team of subagents" in reply
        started = [e for e in stream.entries if e.role == "tool" and e.tool_name == "delegate_task"]
        assert len(started) == 1 and not started[0].is_error
        task_id = started[0].task_id
        assert task_id is not None and task_id in reply

        # The chat answers at once while the task runs.
        await gateway.post(info.session_id, "alice", "what is a slug, by the way?")
        await stream.wait_for(turn_ended(2), "a chat turn while the task runs")
        assert "You said: what is a slug" in answer(stream, 2)
        status = await gateway.service.status(task_id)
        assert not status.phase.is_final

        # The task's life arrives in the conversation: live task items and notable entries.
        await stream.wait_for(task_event(EventKind.APPROVAL_NEEDED), "the approval request")
        assert any(i.event == "task" and i.data["task_id"] == task_id for i in stream.items)
        await gateway.post(info.session_id, "alice", "approve it")
        await stream.wait_for(task_event(EventKind.MERGED), "the merge")
        await stream.wait_for(turn_ended(3), "the approval turn")
        assert "approved by alice" in answer(stream, 3)

        status = await gateway.service.status(task_id)
        assert status.approvals[-1].by == "alice"
        await stream.wait_for(task_event(EventKind.COMPLETED), "completion")
        # Tokens streamed before each assistant message was recorded.
        tokens = [i for i in stream.items if i.event == "token"]
        assert tokens and "".join(t.data["text"] for t in tokens if t.data["turn"] == 2) == (
            answer(stream, 2)
        )
        # Dense offsets, each once, in order.
        offsets = [e.offset for e in stream.entries]
        assert offsets == list(range(len(offsets)))
        state = await gateway.state(info.session_id, "alice")
        assert state.tasks[0].task_id == task_id and state.tasks[0].phase is Phase.COMPLETED
    finally:
        await stream.close()
