"""The conversation engine on the real dev server: a `Gateway` in this process, real
workers, bwrap sandboxes, git, and the scripted model over HTTP through the real
`openai` client (streaming). Nothing in the path is mocked."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHandle

from chat_gateway import Gateway, StreamItem
from switchboard.conversation import SessionEntry
from switchboard.model_server import ModelServerHandle, Scenario, builtin_scenario, parse_scenario
from switchboard.models import EventKind, Phase, TaskRequest
from switchboard.settings import Settings
from testkit import git, make_repo, wait_for, wait_for_phase

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
def chat_model(model: ModelServerHandle) -> Iterator[ModelServerHandle]:
    """The scripted model; per-role latencies set by a test are cleared after it."""
    yield model
    model.configure(role_latency_ms={})


@pytest.fixture
async def gateway(
    client: Client, settings: Settings, worker: None, chat_model: ModelServerHandle
) -> AsyncIterator[Gateway]:
    gateway = Gateway(client, settings)
    try:
        yield gateway
    finally:
        await gateway.aclose()


def scenario_with(**roles: object) -> Scenario:
    """The demo scenario with some roles replaced."""
    document = builtin_scenario("demo").model_dump(mode="json")
    document["roles"].update(roles)
    return parse_scenario(document)


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
        assert "hand this to a team of subagents" in reply
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


async def _delegate_and_decide(gateway: Gateway, user: str, repo: Path, decision: str) -> None:
    info = await gateway.create_session(user, repo=str(repo))
    stream = Collector(gateway.stream(info.session_id, user))
    try:
        await gateway.post(info.session_id, user, f"delegate: {user}'s feature")
        await stream.wait_for(turn_ended(1), f"{user}'s delegation")
        await gateway.post(info.session_id, user, f"hello from {user}")
        await stream.wait_for(turn_ended(2), f"{user}'s chat turn")
        assert f"You said: hello from {user}" in answer(stream, 2)
        await stream.wait_for(task_event(EventKind.APPROVAL_NEEDED), f"{user}'s approval request")
        await gateway.post(info.session_id, user, decision)
        final = EventKind.COMPLETED if decision == "approve" else EventKind.REJECTED
        await stream.wait_for(task_event(final), f"{user}'s task ending")
        state = await gateway.state(info.session_id, user)
        assert len(state.tasks) == 1
        task_ids = {e.task_id for e in stream.entries if e.task_id is not None}
        assert task_ids == {state.tasks[0].task_id}, "another session's task leaked in"
        assert [e.offset for e in stream.entries] == list(range(len(stream.entries)))
        status = await gateway.service.status(state.tasks[0].task_id)
        assert status.owner == user and status.approvals[-1].by == user
    finally:
        await stream.close()


async def test_two_sessions_delegate_and_chat_concurrently(
    gateway: Gateway, tmp_path: Path, chat_model: ModelServerHandle
) -> None:
    chat_model.configure(role_latency_ms={"worker": 50, "explorer": 50})
    await asyncio.gather(
        _delegate_and_decide(gateway, "alice", make_repo(tmp_path / "a"), "approve"),
        _delegate_and_decide(gateway, "bob", make_repo(tmp_path / "b"), "reject"),
    )


SLOW_TASK_SCRIPT = {
    "when": r"(?i)^slow task (?P<n>\d+)",
    "match": "last_user",
    "index_from": "last_user",
    "turns": [
        {
            "tool_calls": [
                {
                    "name": "delegate_task",
                    "arguments": {
                        "goal": "slow task {match.n}",
                        "subtasks": [{"title": "Keep looking", "role": "explorer"}],
                        "review": False,
                    },
                }
            ]
        },
        {"content": "started"},
    ],
}
DEMO_CHAT = builtin_scenario("demo").model_dump(mode="json")["roles"]["conversation"]
SLOW_TASKS = {
    # The demo's chat, plus "slow task N": one explorer listing files until its budget ends.
    "conversation": {**DEMO_CHAT, "scripts": [SLOW_TASK_SCRIPT, *DEMO_CHAT["scripts"]]},
    "explorer": {"default": {"tool_calls": [{"name": "list_files", "arguments": {"path": "."}}]}},
}


async def test_a_chat_turn_is_answered_while_ten_tasks_run(
    gateway: Gateway, repo: Path, chat_model: ModelServerHandle
) -> None:
    chat_model.set_scenario(scenario_with(**SLOW_TASKS))
    chat_model.configure(role_latency_ms={"explorer": 400})
    info = await gateway.create_session("carol", repo=str(repo))
    stream = Collector(gateway.stream(info.session_id, "carol"))
    try:
        for n in range(1, 11):
            await gateway.post(info.session_id, "carol", f"slow task {n}")
        await stream.wait_for(turn_ended(10), "ten delegations")
        state = await gateway.state(info.session_id, "carol")
        task_ids = [t.task_id for t in state.tasks]
        assert len(task_ids) == 10
        await stream.wait_for(
            lambda c: sum(e.event is EventKind.PHASE for e in c.entries) >= 10, "ten running"
        )
        result = await gateway.post(info.session_id, "carol", "are you still there?")
        await stream.wait_for(turn_ended(result.turn), "the chat turn")
        assert "You said: are you still there?" in answer(stream, result.turn)
        # Answered without waiting on any task: every one of them is still running.
        phases = [(await gateway.service.status(t)).phase for t in task_ids]
        assert all(phase is Phase.RUNNING for phase in phases), phases
    finally:
        await stream.close()
        for task_id in task_ids:
            with contextlib.suppress(Exception):
                await gateway.service.cancel(task_id)


BAD_TOOL_CALLS = {
    "conversation": {
        "scripts": [
            {
                "when": "(?i)^try bad calls",
                "match": "last_user",
                "index_from": "last_user",
                "turns": [
                    {"tool_calls": [{"name": "delegate_task", "arguments": {"goal": "   "}}]},
                    {"tool_calls": [{"name": "delegate_task", "arguments": '{"goal": "x"'}]},
                    {"tool_calls": [{"name": "frobnicate", "arguments": {}}]},
                    {"tool_calls": [{"name": "approve_task", "arguments": {"task_id": 7}}]},
                    {"tool_calls": [{"name": "request_changes", "arguments": {"feedback": " "}}]},
                    {"content": "I could not do any of that."},
                ],
            },
            {
                "when": r"(?i)^approve (?P<task>task-\w+)",
                "match": "last_user",
                "index_from": "last_user",
                "turns": [
                    {
                        "tool_calls": [
                            {"name": "approve_task", "arguments": {"task_id": "{match.task}"}}
                        ]
                    },
                    {"content": "{last_tool}"},
                ],
            },
        ]
    }
}


async def test_bad_tool_calls_go_back_to_the_model_and_others_tasks_stay_theirs(
    gateway: Gateway, repo: Path, chat_model: ModelServerHandle
) -> None:
    chat_model.set_scenario(scenario_with(**BAD_TOOL_CALLS))
    info = await gateway.create_session("dave", repo=str(repo))
    stream = Collector(gateway.stream(info.session_id, "dave"))
    try:
        await gateway.post(info.session_id, "dave", "try bad calls")
        await stream.wait_for(turn_ended(1), "the turn with bad calls")
        errors = [e.content for e in stream.entries if e.role == "tool"]
        assert len(errors) == 5
        assert all(e.is_error for e in stream.entries if e.role == "tool")
        assert "goal: Value error, must not be blank" in errors[0]
        assert "not valid JSON" in errors[1]
        assert "unknown tool 'frobnicate'" in errors[2]
        assert "task_id: Input should be a valid string" in errors[3]
        assert "feedback must not be blank: say what should change, or rebase" in errors[4]
        assert answer(stream, 1).endswith("I could not do any of that.")

        # Someone else's task: refused as if it did not exist, and nothing changes.
        submitted = await gateway.service.submit(
            TaskRequest(goal="erin's work", repo=str(repo), owner="erin")
        )
        await gateway.post(info.session_id, "dave", f"approve {submitted.task_id}")
        await stream.wait_for(turn_ended(2), "the refused approval")
        refused = [e for e in stream.entries if e.turn == 2 and e.role == "tool"]
        assert refused[0].is_error and "no task" in refused[0].content
        status = await gateway.service.status(submitted.task_id)
        assert status.approvals == []
        await gateway.service.cancel(submitted.task_id)
    finally:
        await stream.close()


async def test_steer_and_cancel_from_the_chat_reach_the_running_task(
    gateway: Gateway, repo: Path, chat_model: ModelServerHandle
) -> None:
    chat_model.set_scenario(scenario_with(**SLOW_TASKS))
    chat_model.configure(role_latency_ms={"explorer": 300})
    info = await gateway.create_session("frank", repo=str(repo))
    stream = Collector(gateway.stream(info.session_id, "frank"))
    try:
        await gateway.post(info.session_id, "frank", "slow task 1")
        await stream.wait_for(task_event(EventKind.PHASE), "the task running")
        await gateway.post(info.session_id, "frank", "steer: look only at the README")
        await stream.wait_for(task_event(EventKind.STEERED), "the steering reaching the task")
        steered = next(e for e in stream.entries if e.event is EventKind.STEERED)
        assert steered.data["by"] == "frank" and steered.data["running"] == [1]
        assert "look only at the README" in steered.content
        await gateway.post(info.session_id, "frank", "cancel it")
        await stream.wait_for(task_event(EventKind.CANCELLED), "the cancellation")
        state = await gateway.state(info.session_id, "frank")
        assert state.tasks[0].phase is Phase.CANCELLED
    finally:
        await stream.close()


ONE_WORKER_PLAN = [
    {
        "tool_calls": [
            {
                "name": "submit_plan",
                "arguments": {
                    "subtasks": [
                        {
                            "title": "Add a slugify helper",
                            "role": "worker",
                            "instructions": "Add slugify(text). Goal: {goal}",
                        }
                    ]
                },
            }
        ]
    }
]


async def test_rebase_it_from_the_chat_moves_the_change_onto_the_moved_target(
    gateway: Gateway, client: Client, repo: Path, chat_model: ModelServerHandle
) -> None:
    chat_model.set_scenario(scenario_with(planner=ONE_WORKER_PLAN))
    chat_model.configure(role_latency_ms={"reviewer": 1500})
    info = await gateway.create_session("gina", repo=str(repo))
    stream = Collector(gateway.stream(info.session_id, "gina"))

    async def say(text: str) -> list[SessionEntry]:
        """Post `text`, wait for its turn to end; the turn's tool results."""
        turn = (await gateway.post(info.session_id, "gina", text)).turn
        await stream.wait_for(turn_ended(turn), f"the answer to {text!r}")
        return [e for e in stream.entries if e.turn == turn and e.role == "tool"]

    try:
        [started] = await say("delegate: add a slugify helper")
        assert started.task_id is not None
        handle: WorkflowHandle[object, object] = client.get_workflow_handle(started.task_id)
        await wait_for_phase(handle, Phase.REVIEWING)
        (repo / "theirs.txt").write_text("theirs\n")  # main moves on while the reviewer reads
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "main moves on")
        tip = git(repo, "rev-parse", "main")
        chat_model.configure(role_latency_ms={})
        status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
        assert status.target is not None and status.target.behind == 1

        [rebased] = await say("rebase it")
        assert not rebased.is_error, rebased.content
        assert "rebase requested by gina" in rebased.content
        status = await wait_for(
            handle,
            lambda s: s.round == 2 and s.phase is Phase.AWAITING_APPROVAL,
            what="the rebased change back at the gate",
        )
        assert status.target is not None
        assert (status.target.base_commit, status.target.behind) == (tip, 0)
        assert status.approvals[-1].decision == "changes_requested"
        assert status.approvals[-1].by == "gina"

        # Nothing moved since: the workflow refuses, and the model reads why.
        [refused] = await say("rebase it")
        assert refused.is_error and "nothing to rebase" in refused.content
        assert (await gateway.service.status(started.task_id)).round == 2

        await say("approve it")
        result = await wait_for_phase(handle, Phase.COMPLETED)
        assert result.merge is not None and result.merge.merged
        git(repo, "merge-base", "--is-ancestor", tip, result.merge.branch)
        assert git(repo, "show", f"{result.merge.branch}:theirs.txt") == "theirs"
    finally:
        await stream.close()
