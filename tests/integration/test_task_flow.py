"""Whole tasks on the real dev server: bwrap sandboxes, real git, the scripted model
over HTTP through the real openai client. Nothing in the path is mocked."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError

from switchboard.model_server import ModelServerHandle, Scenario, parse_scenario
from switchboard.models import (
    ApprovalRecord,
    ApproveInput,
    EventKind,
    EventsPage,
    EventsRequest,
    Phase,
    RejectInput,
    RequestChangesInput,
    Role,
    SubagentState,
    SubtaskSpec,
    TaskRequest,
    TaskResult,
)
from switchboard.settings import Settings
from switchboard.wire import Errors, Queries, Updates, Workflows
from testkit import git, history_event_types, wait_for, wait_for_phase

pytestmark = pytest.mark.integration


def _worker_turns(path: str, content: str) -> list[dict[str, object]]:
    return [
        {"tool_calls": [{"name": "list_files", "arguments": {"path": "."}}]},
        {"tool_calls": [{"name": "write_file", "arguments": {"path": path, "content": content}}]},
        {"tool_calls": [{"name": "finish", "arguments": {"summary": f"wrote {path}"}}]},
    ]


def _scenario(worker: dict[str, object], **roles: object) -> Scenario:
    base: dict[str, object] = {
        "reviewer": [
            {"tool_calls": [{"name": "diff", "arguments": {}}]},
            {
                "tool_calls": [
                    {"name": "finish", "arguments": {"summary": "fine", "verdict": "approve"}}
                ]
            },
        ],
        "worker": worker,
    }
    base.update(roles)
    return parse_scenario({"name": "test", "roles": base})


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


async def _events(handle: WorkflowHandle[object, object]) -> EventsPage:
    page: EventsPage = await handle.query(
        Queries.EVENTS, EventsRequest(from_offset=0, limit=2000), result_type=EventsPage
    )
    return page


async def _decide(
    handle: WorkflowHandle[object, object], update: str, arg: object
) -> ApprovalRecord:
    record: ApprovalRecord = await handle.execute_update(update, arg, result_type=ApprovalRecord)
    return record


async def test_six_subagents_run_in_parallel_review_approve_and_merge(
    client: Client, settings: Settings, worker: None, repo: Path, model: ModelServerHandle
) -> None:
    model.configure(latency_ms=150)
    subtasks = [SubtaskSpec(title=f"Part {i}", role=Role.WORKER) for i in range(1, 7)]
    handle = await _start(
        client, settings, TaskRequest(goal="Add six features", repo=str(repo), subtasks=subtasks)
    )
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)

    assert [s.state for s in status.subagents] == [SubagentState.DONE] * 6
    starts = [s.started_at for s in status.subagents if s.started_at]
    ends = [s.finished_at for s in status.subagents if s.finished_at]
    assert len(starts) == len(ends) == 6
    # Parallel: every subagent started before any of them finished.
    assert max(starts) < min(ends)
    assert status.diff_stat is not None and status.diff_stat.files_changed == 6
    assert sorted(status.diff_stat.files) == [f"src/feature_{i}.py" for i in range(1, 7)]
    assert status.review is not None and status.review.verdict == "approve"

    record = await _decide(handle, Updates.APPROVE, ApproveInput(by="alice", comment="ship it"))
    assert record.decision == "approved" and record.by == "alice"
    result: TaskResult = await handle.result()
    assert result.phase is Phase.COMPLETED
    assert result.merge is not None and result.merge.merged
    branch = result.merge.branch
    assert branch == f"switchboard/{handle.id}"
    files = git(repo, "ls-tree", "-r", "--name-only", branch).splitlines()
    for i in range(1, 7):
        assert f"src/feature_{i}.py" in files
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"  # user's checkout untouched
    # Cleanup: no worktree, transcript or step journal of the task left on disk.
    assert not any((settings.worktrees_dir / handle.id).glob("*"))
    assert not (settings.transcripts_dir / handle.id).exists()

    kinds = [e.kind for e in (await _events(handle)).events]
    for expected in (
        EventKind.PLAN,
        EventKind.SUBAGENT_STARTED,
        EventKind.SUBAGENT_STEP,
        EventKind.SUBAGENT_FINISHED,
        EventKind.DIFF_READY,
        EventKind.REVIEW,
        EventKind.APPROVAL_NEEDED,
        EventKind.APPROVED,
        EventKind.MERGED,
        EventKind.COMPLETED,
    ):
        assert expected in kinds, expected
    # Every model call is distinct: none was made twice.
    assert model.stats()["duplicates"] == []


async def test_planner_splits_the_goal(
    client: Client, settings: Settings, worker: None, repo: Path
) -> None:
    handle = await _start(client, settings, TaskRequest(goal="Add slugify", repo=str(repo)))
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    assert [s.role for s in status.subagents] == [Role.WORKER, Role.WORKER, Role.EXPLORER]
    assert status.subagents[2].diff_stat is None or status.subagents[2].diff_stat.files_changed == 0
    await _decide(handle, Updates.REJECT, RejectInput(by="bob"))
    result: TaskResult = await handle.result()
    assert result.phase is Phase.REJECTED


async def test_request_changes_goes_round_again_on_the_same_branches(
    client: Client, settings: Settings, worker: None, repo: Path, model: ModelServerHandle
) -> None:
    model.set_scenario(
        _scenario(
            {
                "scripts": [
                    {
                        "when": "asked for changes",
                        "turns": _worker_turns("src/second_{subagent}.py", "v2\n"),
                    },
                    {"turns": _worker_turns("src/first_{subagent}.py", "v1\n")},
                ]
            }
        )
    )
    handle = await _start(
        client,
        settings,
        TaskRequest(goal="Two rounds", repo=str(repo), subtasks=[SubtaskSpec(title="Only")]),
    )
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    # Refused before history: empty feedback.
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await _decide(handle, Updates.REQUEST_CHANGES, RequestChangesInput(feedback="  "))
    assert isinstance(refused.value.cause, ApplicationError)
    assert refused.value.cause.type == Errors.INVALID_INPUT

    await _decide(
        handle,
        Updates.REQUEST_CHANGES,
        RequestChangesInput(by="carol", feedback="add a second file"),
    )
    status = await wait_for(
        handle,
        lambda s: s.round == 2 and s.phase is Phase.AWAITING_APPROVAL,
        what="round 2 awaiting approval",
    )
    assert status.diff_stat is not None
    assert sorted(status.diff_stat.files) == ["src/first_1.py", "src/second_1.py"]
    await _decide(handle, Updates.APPROVE, ApproveInput(by="carol"))
    result: TaskResult = await handle.result()
    assert result.phase is Phase.COMPLETED
    files = git(repo, "ls-tree", "-r", "--name-only", f"switchboard/{handle.id}").splitlines()
    assert {"src/first_1.py", "src/second_1.py"} <= set(files)
    assert [a.decision for a in status.approvals] == ["changes_requested"]


async def test_wrong_phase_and_bad_updates_never_reach_history(
    client: Client, settings: Settings, worker: None, repo: Path, model: ModelServerHandle
) -> None:
    model.configure(latency_ms=300)
    handle = await _start(
        client,
        settings,
        TaskRequest(goal="Slow", repo=str(repo), subtasks=[SubtaskSpec(title="A")]),
    )
    await wait_for_phase(handle, Phase.RUNNING)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await _decide(handle, Updates.APPROVE, ApproveInput(by="eve"))
    assert isinstance(refused.value.cause, ApplicationError)
    assert refused.value.cause.type == Errors.WRONG_PHASE
    assert "not awaiting approval" in str(refused.value.cause)
    types = await history_event_types(client, handle.id)
    assert not any("update" in t for t in types)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()


async def test_cancel_mid_task_cleans_up(
    client: Client, settings: Settings, worker: None, repo: Path, model: ModelServerHandle
) -> None:
    model.configure(latency_ms=400)
    handle = await _start(
        client,
        settings,
        TaskRequest(
            goal="Cancel me",
            repo=str(repo),
            subtasks=[SubtaskSpec(title="A"), SubtaskSpec(title="B")],
        ),
    )
    await wait_for(handle, lambda s: any(x.steps >= 1 for x in s.subagents), what="a subagent step")
    assert any((settings.worktrees_dir / handle.id).iterdir())
    assert any((settings.transcripts_dir / handle.id).iterdir())
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    status = await wait_for_phase(handle, Phase.CANCELLED)
    assert status.phase is Phase.CANCELLED
    assert not any((settings.worktrees_dir / handle.id).glob("*"))
    assert not (settings.transcripts_dir / handle.id).exists()
    kinds = [e.kind for e in (await _events(handle)).events]
    assert EventKind.CANCELLED in kinds


async def test_merge_conflict_is_reported_and_approval_refused(
    client: Client, settings: Settings, worker: None, repo: Path, model: ModelServerHandle
) -> None:
    model.set_scenario(_scenario({"turns": _worker_turns("shared.txt", "subagent {subagent}\n")}))
    handle = await _start(
        client,
        settings,
        TaskRequest(
            goal="Conflict",
            repo=str(repo),
            subtasks=[SubtaskSpec(title="A"), SubtaskSpec(title="B")],
        ),
    )
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    assert status.merge is not None and not status.merge.merged
    assert status.merge.conflicts == ["shared.txt"]
    assert status.review is None  # nothing coherent to review
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await _decide(handle, Updates.APPROVE, ApproveInput())
    assert "conflict" in str(refused.value.cause)
    kinds = [e.kind for e in (await _events(handle)).events]
    assert EventKind.MERGE_CONFLICT in kinds
    await _decide(handle, Updates.REJECT, RejectInput(comment="conflicting"))
    result: TaskResult = await handle.result()
    assert result.phase is Phase.REJECTED
    assert f"switchboard/{handle.id}" not in git(repo, "branch", "--list")


async def test_denied_tool_calls_are_answered_and_counted(
    client: Client, settings: Settings, worker: None, repo: Path, model: ModelServerHandle
) -> None:
    model.set_scenario(
        _scenario(
            {"turns": _worker_turns("ok.txt", "ok\n")},
            explorer=[
                {
                    "tool_calls": [
                        {"name": "write_file", "arguments": {"path": "evil.txt", "content": "x"}},
                        {"name": "read_file", "arguments": {"path": "../../etc/passwd"}},
                        {"name": "teleport", "arguments": {}},
                        {"name": "read_file", "arguments": "{not json"},
                    ]
                },
                {"tool_calls": [{"name": "finish", "arguments": {"summary": "tried"}}]},
            ],
        )
    )
    handle = await _start(
        client,
        settings,
        TaskRequest(
            goal="Explore",
            repo=str(repo),
            subtasks=[SubtaskSpec(title="Look", role=Role.EXPLORER)],
            review=False,
        ),
    )
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    explorer = status.subagents[0]
    assert explorer.denied_calls == 4
    assert explorer.state is SubagentState.DONE
    assert status.diff_stat is not None and status.diff_stat.files_changed == 0
    denied = [e for e in (await _events(handle)).events if e.kind is EventKind.TOOL_DENIED]
    reasons = sorted(str(e.data["reason"]) for e in denied)
    assert reasons == ["malformed_arguments", "not_allowed", "unknown_tool", "unsafe_path"]
    await handle.cancel()


async def test_unknown_repo_fails_with_a_clear_error(
    client: Client, settings: Settings, worker: None, tmp_path: Path
) -> None:
    handle = await _start(client, settings, TaskRequest(goal="x", repo=str(tmp_path / "nope")))
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert "nope" in str(failed.value.cause)
    status = await wait_for_phase(handle, Phase.FAILED)
    assert status.error and "nope" in status.error


async def test_a_planner_returning_garbage_fails_the_task_clearly(
    client: Client, settings: Settings, worker: None, repo: Path, model: ModelServerHandle
) -> None:
    model.set_scenario(parse_scenario({"roles": {"planner": [{"content": "no idea, sorry"}]}}))
    handle = await _start(client, settings, TaskRequest(goal="Plan me", repo=str(repo)))
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert "plan" in str(failed.value.cause).lower()
    assert model.stats()["by_role"].get("planner") == 3  # PLAN_RETRY: three attempts, no more


async def test_a_long_subagent_continues_as_new_and_keeps_its_state(
    client: Client, settings: Settings, worker: None, repo: Path, model: ModelServerHandle
) -> None:
    from activities._git import prepare_mirror
    from switchboard.contracts import PrepareRepoInput, SubagentInput, SubagentResult
    from switchboard.models import Budget

    turns = [
        {"tool_calls": [{"name": "read_file", "arguments": {"path": "README.md"}}]}
        for _ in range(6)
    ] + _worker_turns("src/long.py", "done\n")
    model.set_scenario(_scenario({"turns": turns}))
    prepared = prepare_mirror(settings, PrepareRepoInput(repo=str(repo)))
    task_id = f"task-{uuid.uuid4().hex}"
    handle = await client.start_workflow(
        Workflows.SUBAGENT,
        SubagentInput(
            task_id=task_id,
            index=1,
            goal="A long one",
            subtask=SubtaskSpec(title="Long"),
            prepared=prepared,
            branch=f"switchboard/{task_id}/1",
            start_commit=prepared.base_commit,
            budget=Budget(),
            history_limit=50,
        ),
        id=f"{task_id}-sub1-r1",
        task_queue=settings.task_queue,
        result_type=SubagentResult,
    )
    result = await handle.result()
    assert result.state is SubagentState.DONE
    assert result.steps == 9 and result.tool_calls == 8
    assert result.diff_stat is not None and result.diff_stat.files == ["src/long.py"]
    last_run = await handle.fetch_history()
    first = last_run.events[0].workflow_execution_started_event_attributes
    assert first.continued_execution_run_id, "the subagent should have continued as new"
    assert model.stats()["duplicates"] == []


async def test_steering_reaches_running_subagents_at_their_next_turn(
    client: Client, settings: Settings, worker: None, repo: Path, model: ModelServerHandle
) -> None:
    from switchboard.models import SteerInput
    from switchboard.wire import Signals

    model.configure(latency_ms=300)
    handle = await _start(
        client,
        settings,
        TaskRequest(goal="Steer me", repo=str(repo), subtasks=[SubtaskSpec(title="A")]),
    )
    await wait_for(handle, lambda s: any(x.steps >= 1 for x in s.subagents), what="the first step")
    await handle.signal(Signals.STEER, SteerInput(by="dana", guidance="use tabs, not spaces"))
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    transcript = (settings.transcripts_dir / handle.id / "1" / "r1.json").read_text()
    assert "use tabs, not spaces" in transcript
    steered = [e for e in (await _events(handle)).events if e.kind is EventKind.STEERED]
    assert steered and steered[0].data["by"] == "dana" and steered[0].data["running"] == [1]
    await handle.cancel()


async def test_a_step_is_one_activity_and_fast_steps_are_reported_in_batches(
    client: Client, settings: Settings, worker: None, repo: Path, model: ModelServerHandle
) -> None:
    """Model turn + tools in one activity; steps within a second share one report."""
    model.configure(latency_ms=0)
    turns = [
        {"tool_calls": [{"name": "read_file", "arguments": {"path": "README.md"}}]}
        for _ in range(8)
    ] + _worker_turns("src/quick.py", "quick\n")
    model.set_scenario(_scenario({"turns": turns}))
    handle = await _start(
        client,
        settings,
        TaskRequest(
            goal="Many quick steps",
            repo=str(repo),
            subtasks=[SubtaskSpec(title="Quick", role=Role.WORKER)],
            review=False,
        ),
    )
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    subagent = status.subagents[0]
    assert subagent.state is SubagentState.DONE and subagent.steps == 11

    child = f"{handle.id}-sub1-r1"
    history = await client.get_workflow_handle(child).fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert scheduled.count("subagent_step") == 11
    # The sandbox starts in the first step, and commit + stop are one activity.
    assert scheduled == ["create_worktree", *["subagent_step"] * 11, "finish_subagent"]

    steps = [
        e
        for e in (await _events(handle)).events
        if e.kind is EventKind.SUBAGENT_STEP and e.subagent == 1
    ]
    reported = sum(int(str(e.data.get("batched_steps", 1))) for e in steps)
    assert reported == 11, [e.message for e in steps]  # every step is told, none twice
    assert len(steps) < 11 and any("batched_steps" in e.data for e in steps)
    assert steps[-1].data["steps"] == 11
    events = (await _events(handle)).events
    started = [e for e in events if e.kind is EventKind.SUBAGENT_STARTED]
    assert [e.message for e in started] == ["#1 worker started: Quick"]  # from the task
    signals = [
        e
        for e in history.events
        if e.HasField("signal_external_workflow_execution_initiated_event_attributes")
    ]
    assert len(signals) == len(steps)  # only step reports: no start or end signal
    await handle.cancel()
