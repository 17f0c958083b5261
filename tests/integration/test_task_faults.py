"""Faults of issue #12 on the real stack (dev server, bwrap, git, the scripted model with
its fault injection): failed workers, cancels in every phase, planner outages, and
concurrent decisions never end in a false report."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from entrypoints.cli import app
from switchboard.model_server import ModelServerHandle, parse_scenario
from switchboard.models import (
    ApprovalRecord,
    ApproveInput,
    EventKind,
    EventsPage,
    EventsRequest,
    Phase,
    RequestChangesInput,
    Role,
    SteerInput,
    SubagentState,
    SubtaskSpec,
    TaskRequest,
    TaskResult,
)
from switchboard.settings import Settings
from switchboard.wire import Queries, Signals, Updates, Workflows
from testkit import git, wait_for, wait_for_phase

pytestmark = pytest.mark.integration

WORKER = [
    {
        "tool_calls": [
            {"name": "write_file", "arguments": {"path": "f{subagent}.txt", "content": "x"}}
        ]
    },
    {"tool_calls": [{"name": "finish", "arguments": {"summary": "wrote it"}}]},
]
REVIEWER = [
    {"tool_calls": [{"name": "finish", "arguments": {"summary": "fine", "verdict": "approve"}}]}
]
EXPLORER = [{"tool_calls": [{"name": "finish", "arguments": {"summary": "looked"}}]}]
PLANNER = [
    {
        "tool_calls": [
            {
                "name": "submit_plan",
                "arguments": {
                    "subtasks": [{"title": "A", "instructions": "write", "role": "worker"}]
                },
            }
        ]
    }
]


@pytest.fixture
def scripted(model: ModelServerHandle) -> ModelServerHandle:
    model.set_scenario(
        parse_scenario(
            {
                "name": "faults",
                "roles": {
                    "worker": WORKER,
                    "reviewer": REVIEWER,
                    "explorer": EXPLORER,
                    "planner": PLANNER,
                },
            }
        )
    )
    return model


async def _start(
    client: Client, settings: Settings, request: TaskRequest
) -> WorkflowHandle[object, TaskResult]:
    return await client.start_workflow(
        Workflows.TASK,
        request,
        id=f"task-{uuid.uuid4().hex}",
        task_queue=settings.task_queue,
        result_type=TaskResult,
    )


async def _events(handle: WorkflowHandle[object, TaskResult]) -> EventsPage:
    page: EventsPage = await handle.query(
        Queries.EVENTS, EventsRequest(from_offset=0, limit=2000), result_type=EventsPage
    )
    return page


async def _result(handle: WorkflowHandle[object, TaskResult]) -> TaskResult:
    """The task's result, bounded: a task that never ends fails the test, not hangs it."""
    return await asyncio.wait_for(handle.result(), timeout=120)


async def _update(handle: WorkflowHandle[object, TaskResult], name: str, arg: object) -> str:
    """The update's outcome: "ok", or the message it was refused with."""
    try:
        await handle.execute_update(name, arg, result_type=ApprovalRecord)
    except WorkflowUpdateFailedError as refused:
        return str(refused.cause)
    return "ok"


def _two_workers(repo: Path, **extra: object) -> TaskRequest:
    return TaskRequest(
        goal="Write two files",
        repo=str(repo),
        subtasks=[SubtaskSpec(title="A"), SubtaskSpec(title="B")],
        **extra,
    )


async def test_no_successful_worker_fails_the_task_with_switchboards_advice(
    client: Client, settings: Settings, worker: None, repo: Path, scripted: ModelServerHandle
) -> None:
    scripted.add_fault("http_401", role="worker", count=100)
    handle = await _start(
        client,
        settings,
        TaskRequest(
            goal="Everything fails but the explorer",
            repo=str(repo),
            subtasks=[
                SubtaskSpec(title="A"),
                SubtaskSpec(title="B"),
                SubtaskSpec(title="Look", role=Role.EXPLORER),
            ],
        ),
    )
    with pytest.raises(WorkflowFailureError):
        await _result(handle)
    status = await wait_for_phase(handle, Phase.FAILED)
    assert status.error is not None
    assert status.error.startswith("no worker succeeded: #1 A failed (")
    assert "#2 B failed (" in status.error
    assert "check SWITCHBOARD_LLM_API_KEY" in status.error
    assert status.merge is None and not status.approvals
    assert f"switchboard/{handle.id}" not in git(repo, "branch", "--list")


async def test_a_partial_result_needs_an_explicit_choice_and_a_retry_reruns_only_the_failed(
    client: Client, settings: Settings, worker: None, repo: Path, scripted: ModelServerHandle
) -> None:
    scripted.add_fault("http_401", role="worker", count=1)
    handle = await _start(client, settings, _two_workers(repo))
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    assert len(status.partial) == 1
    lost = status.partial[0]
    kept = 3 - lost
    assert status.subagents[lost - 1].state is SubagentState.FAILED
    asked = [e for e in (await _events(handle)).events if e.kind is EventKind.APPROVAL_NEEDED]
    assert f"#{lost} " in asked[-1].message and "drop_failed" in asked[-1].message

    refused = await _update(handle, Updates.APPROVE, ApproveInput(by="ann"))
    assert "partial result" in refused and f"#{lost} " in refused

    await handle.signal(Signals.STEER, SteerInput(by="ann", guidance="use tabs"))
    await wait_for(handle, lambda s: s.next_offset > status.next_offset, what="the steer event")
    events = (await _events(handle)).events
    assert "kept for the next round" in events[-1].message

    retry = RequestChangesInput(by="ann", feedback="", only_failed=True)
    assert await _update(handle, Updates.REQUEST_CHANGES, retry) == "ok"
    status = await wait_for(
        handle,
        lambda s: s.phase is Phase.AWAITING_APPROVAL and s.round == 2,
        what="round 2 at the gate",
    )
    assert status.partial == []
    assert status.subagents[kept - 1].round == 1  # the one that succeeded was not re-run
    assert status.subagents[lost - 1].round == 2
    assert await _update(handle, Updates.APPROVE, ApproveInput(by="ann")) == "ok"
    result = await _result(handle)
    assert result.phase is Phase.COMPLETED
    files = git(repo, "ls-tree", "--name-only", "-r", f"switchboard/{handle.id}").split()
    assert {"f1.txt", "f2.txt"} <= set(files)


async def test_approving_without_the_failed_worker_merges_only_the_rest(
    client: Client, settings: Settings, worker: None, repo: Path, scripted: ModelServerHandle
) -> None:
    scripted.add_fault("http_401", role="worker", count=1)
    handle = await _start(client, settings, _two_workers(repo, review=False))
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    lost = status.partial[0]
    drop = ApproveInput(by="ann", drop_failed=True)
    assert await _update(handle, Updates.APPROVE, drop) == "ok"
    result = await _result(handle)
    assert result.phase is Phase.COMPLETED
    files = set(git(repo, "ls-tree", "--name-only", "-r", f"switchboard/{handle.id}").split())
    assert f"f{3 - lost}.txt" in files and f"f{lost}.txt" not in files


async def test_an_empty_change_is_never_completed(
    client: Client, settings: Settings, worker: None, repo: Path, scripted: ModelServerHandle
) -> None:
    handle = await _start(
        client,
        settings,
        TaskRequest(
            goal="Only look",
            repo=str(repo),
            subtasks=[SubtaskSpec(title="Look", role=Role.EXPLORER)],
            review=False,
        ),
    )
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    refused = await _update(handle, Updates.APPROVE, ApproveInput(by="ann"))
    assert "combined change is empty" in refused
    await handle.cancel()


async def _cancelled(handle: WorkflowHandle[object, TaskResult]) -> str:
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await _result(handle)
    status = await wait_for_phase(handle, Phase.CANCELLED, timeout=30)
    assert status.error is None
    cancels = [e for e in (await _events(handle)).events if e.kind is EventKind.CANCELLED]
    assert len(cancels) == 1
    return cancels[0].message


async def test_a_cancel_during_planning_ends_cancelled(
    client: Client, settings: Settings, worker: None, repo: Path, scripted: ModelServerHandle
) -> None:
    scripted.configure(role_latency_ms={"planner": 5000})
    handle = await _start(client, settings, TaskRequest(goal="Plan slowly", repo=str(repo)))
    await wait_for_phase(handle, Phase.PLANNING)
    await asyncio.sleep(0.5)
    assert "nothing was published" in await _cancelled(handle)


async def test_a_cancel_during_review_is_not_swallowed_by_the_reviewer(
    client: Client, settings: Settings, worker: None, repo: Path, scripted: ModelServerHandle
) -> None:
    scripted.configure(role_latency_ms={"reviewer": 5000})
    handle = await _start(client, settings, _two_workers(repo))
    await wait_for_phase(handle, Phase.REVIEWING)
    await asyncio.sleep(0.5)
    assert "nothing was published" in await _cancelled(handle)
    assert not any((settings.worktrees_dir / handle.id).glob("*"))
    assert f"switchboard/{handle.id}" not in git(repo, "branch", "--list")


async def test_a_cancel_racing_an_approve_ends_cancelled_and_says_what_was_published(
    client: Client, settings: Settings, worker: None, repo: Path, scripted: ModelServerHandle
) -> None:
    handle = await _start(client, settings, _two_workers(repo, review=False))
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    assert await _update(handle, Updates.APPROVE, ApproveInput(by="ann")) == "ok"
    message = await _cancelled(handle)
    published = f"switchboard/{handle.id}" in git(repo, "branch", "--list")
    # Whichever won the race, the task says truthfully whether the branch went out.
    assert ("already published" in message) == published
    assert ("nothing was published" in message) == (not published)


async def test_the_planner_rides_out_a_brief_outage(
    client: Client, settings: Settings, worker: None, repo: Path, scripted: ModelServerHandle
) -> None:
    scripted.add_fault("http_429", role="planner", count=4)
    handle = await _start(client, settings, TaskRequest(goal="Plan", repo=str(repo)))
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL, timeout=60)
    assert [s.title for s in status.subagents] == ["A"]
    assert scripted.stats()["by_role"]["planner"] == 5
    await handle.cancel()


async def test_concurrent_approvals_apply_once_and_tell_the_losers_who_won(
    client: Client, settings: Settings, worker: None, repo: Path, scripted: ModelServerHandle
) -> None:
    handle = await _start(client, settings, _two_workers(repo, review=False))
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    outcomes = await asyncio.gather(
        *(_update(handle, Updates.APPROVE, ApproveInput(by=f"u{i}")) for i in range(3))
    )
    assert outcomes.count("ok") == 1
    for lost in (o for o in outcomes if o != "ok"):
        assert "not awaiting approval" not in lost or "merging" in lost or "completed" in lost
        assert "awaiting_approval, not awaiting" not in lost
    result = await _result(handle)
    assert result.phase is Phase.COMPLETED
    status = await wait_for_phase(handle, Phase.COMPLETED)
    assert len(status.approvals) == 1


async def test_a_failed_tool_says_why_in_events_status_and_task_logs(
    client: Client,
    settings: Settings,
    worker: None,
    repo: Path,
    model: ModelServerHandle,
    temporal_env: WorkflowEnvironment,
) -> None:
    run = {"name": "run", "arguments": {"command": "cat no-such-file.txt"}}
    model.set_scenario(
        parse_scenario(
            {"roles": {"worker": [{"tool_calls": [run]}, *WORKER], "reviewer": REVIEWER}}
        )
    )
    handle = await _start(
        client,
        settings,
        TaskRequest(
            goal="Fail a tool", repo=str(repo), subtasks=[SubtaskSpec(title="A")], review=False
        ),
    )
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    failed = [t for t in status.subagents[0].tools if not t.ok]
    assert [t.tool for t in failed] == ["run"]
    assert "No such file" in failed[0].excerpt and failed[0].exit_code == 1
    steps = [e.message for e in (await _events(handle)).events if e.kind is EventKind.SUBAGENT_STEP]
    assert any("run failed" in m and "No such file" in m for m in steps)
    env = {
        "SWITCHBOARD_TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "SWITCHBOARD_TASK_QUEUE": settings.task_queue,
        "SWITCHBOARD_USER": "local",
    }
    args = ["task", "--direct", "logs", handle.id, "--subagent", "1"]  # no API here
    shown = await asyncio.to_thread(lambda: CliRunner().invoke(app, args, env=env))
    assert shown.exit_code == 0, shown.output
    assert "run failed (error), exit 1" in shown.stdout and "No such file" in shown.stdout
    await handle.cancel()
