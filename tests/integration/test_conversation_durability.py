"""What survives: a client reconnecting, the gateway restarting mid-task and mid-turn,
a session continuing as new. The stream must lose nothing and repeat nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.client import Client

from chat_gateway import Gateway
from switchboard.conversation import EntryKind, SessionEntry, is_notable
from switchboard.model_server import ModelServerHandle
from switchboard.models import EventKind, Phase
from switchboard.settings import Settings
from testkit import wait_for_phase
from tests.integration.test_conversation import (
    Collector,
    answer,
    chat_model,
    task_event,
    turn_ended,
)

pytestmark = pytest.mark.integration

__all__ = ["chat_model"]  # the fixture, shared with test_conversation


def dumps(entries: list[SessionEntry]) -> list[dict[str, object]]:
    return [e.model_dump(mode="json") for e in entries]


async def test_nothing_lost_or_repeated_across_a_reconnect_and_a_gateway_restart(
    client: Client, settings: Settings, worker: None, repo: Path, chat_model: ModelServerHandle
) -> None:
    chat_model.configure(role_latency_ms={"worker": 150, "explorer": 150, "reviewer": 150})
    seen: list[SessionEntry] = []
    first = Gateway(client, settings)
    info = await first.create_session("alice", repo=str(repo))
    sid = info.session_id

    one = Collector(first.stream(sid, "alice"))
    await first.post(sid, "alice", "delegate: add a helper")
    await one.wait_for(turn_ended(1), "the delegation")
    await one.close()  # the client drops
    seen += one.entries

    await first.post(sid, "alice", "anyone there?")  # answered while nobody listens
    two = Collector(first.stream(sid, "alice", seen[-1].offset + 1))
    await two.wait_for(turn_ended(2), "the turn answered while disconnected")
    await two.wait_for(task_event(EventKind.PLAN), "the plan")
    await two.close()
    seen += two.entries
    state = await first.state(sid, "alice")
    task_id = state.tasks[0].task_id

    await first.aclose()  # the gateway goes away while the task runs
    await wait_for_phase(client.get_workflow_handle(task_id), Phase.AWAITING_APPROVAL)

    second = Gateway(client, settings)
    try:
        three = Collector(second.stream(sid, "alice", seen[-1].offset + 1))
        await three.wait_for(task_event(EventKind.APPROVAL_NEEDED), "the missed approval request")
        await second.post(sid, "alice", "approve")
        await three.wait_for(task_event(EventKind.COMPLETED), "the merge")
        await three.close()
        seen += three.entries

        assert [e.offset for e in seen] == list(range(len(seen)))
        durable = await second.store.entries(sid, 0, 2000)
        assert dumps(seen) == dumps(durable.entries)
        # Each notable task event entered the conversation exactly once, in task order.
        recorded = [e.task_offset for e in seen if e.kind is EntryKind.TASK_EVENT]
        events = await second.service.events(task_id, 0, 2000)
        assert recorded == [e.offset for e in events.events if is_notable(e)]
    finally:
        await second.aclose()


async def test_a_turn_cut_by_a_gateway_restart_is_answered_once_by_the_next(
    client: Client, settings: Settings, worker: None, chat_model: ModelServerHandle
) -> None:
    chat_model.configure(role_latency_ms={"conversation": 1500})
    first = Gateway(client, settings)
    info = await first.create_session("bob")
    await first.post(info.session_id, "bob", "are you there?")
    while chat_model.stats()["by_role"].get("conversation", 0) < 1:
        await asyncio.sleep(0.02)
    await first.aclose()  # mid-turn: the model is still thinking
    chat_model.configure(role_latency_ms={})

    second = Gateway(client, settings)  # same host, same runner id: resumes at once
    stream = Collector(second.stream(info.session_id, "bob"))
    try:
        await stream.wait_for(turn_ended(1), "the resumed turn")
        replies = [e for e in stream.entries if e.turn == 1 and e.role == "assistant"]
        assert len(replies) == 1
        assert answer(stream, 1) == "Scripted model here. You said: are you there?"
        state = await second.state(info.session_id, "bob")
        assert state.turns == []
    finally:
        await stream.close()
        await second.aclose()


async def test_a_long_session_continues_as_new_and_keeps_its_offsets(
    client: Client, settings: Settings, worker: None, chat_model: ModelServerHandle
) -> None:
    gateway = Gateway(client, settings)
    info = await gateway.create_session("carol", max_history_events=60)
    stream = Collector(gateway.stream(info.session_id, "carol"))
    try:
        for n in range(1, 13):
            await gateway.post(info.session_id, "carol", f"message {n}", request_id=f"m{n}")
            await stream.wait_for(turn_ended(n), f"turn {n}")
        duplicate = await gateway.post(info.session_id, "carol", "message 12", request_id="m12")
        assert duplicate.duplicate and duplicate.turn == 12
        state = await gateway.state(info.session_id, "carol")
        assert state.runs >= 2, "the session never continued as new"
        assert state.turns == [] and state.next_offset == 24
        assert [e.offset for e in stream.entries] == list(range(24))
        assert answer(stream, 12) == "Scripted model here. You said: message 12"
        durable = await gateway.store.entries(info.session_id, 0, 2000)
        assert dumps(durable.entries) == dumps(stream.entries)
        context = await gateway.store.context(info.session_id, 12)
        assert context.entries[0].content == "message 1"
    finally:
        await stream.close()
        await gateway.aclose()
