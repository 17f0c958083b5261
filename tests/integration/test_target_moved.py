"""The target branch moves while a task runs (issue #12 item 6): on the real dev server,
real git, bwrap and the scripted model. The gate and the merge compare the change with
the target's current tip; a rebase round moves it there; a conflict is reported and a
rebase onto it refused; nothing is ever merged silently onto a moved target."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError

from switchboard.model_server import ModelServerHandle, Scenario, parse_scenario
from switchboard.models import (
    ApprovalRecord,
    ApproveInput,
    EventKind,
    EventsPage,
    EventsRequest,
    Phase,
    RequestChangesInput,
    Role,
    SubtaskSpec,
    TaskRequest,
    TaskResult,
    TaskStatus,
)
from switchboard.settings import Settings
from switchboard.wire import Activities, Queries, Updates, Workflows
from testkit import git, wait_for, wait_for_phase

pytestmark = pytest.mark.integration

Handle = WorkflowHandle[object, TaskResult]


async def _one_worker_task(
    client: Client, settings: Settings, repo: Path, *, review: bool
) -> Handle:
    """A task with one worker subtask writing a file (what it writes: the model's scenario)."""
    handle: Handle = await client.start_workflow(
        Workflows.TASK,
        TaskRequest(
            goal="Write a file",
            repo=str(repo),
            subtasks=[SubtaskSpec(title="Write it", role=Role.WORKER)],
            review=review,
        ),
        id=f"task-{uuid.uuid4().hex}",
        task_queue=settings.task_queue,
        result_type=TaskResult,
    )
    return handle


async def _task_moving_main(
    client: Client, settings: Settings, repo: Path, model: ModelServerHandle, *, ours: str
) -> tuple[Handle, TaskStatus]:
    """A one-worker task writing `ours`; `main` gains a commit (writing `theirs.txt`
    and `README.md`) while the reviewer reads. Returns the task parked at the gate."""
    model.set_scenario(_writing(ours))
    model.configure(role_latency_ms={"reviewer": 1500})
    handle = await _one_worker_task(client, settings, repo, review=True)
    await wait_for_phase(handle, Phase.REVIEWING)
    _main_moves(repo)
    model.configure(role_latency_ms={})
    return handle, await wait_for_phase(handle, Phase.AWAITING_APPROVAL)


def _main_moves(repo: Path) -> None:
    (repo / "theirs.txt").write_text("theirs\n")
    (repo / "README.md").write_text("# demo, rewritten on main\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "main moves on")


def _writing(ours: str) -> Scenario:
    """One worker writes `ours` and finishes; the reviewer approves."""
    return parse_scenario(
        {
            "name": "target-moves",
            "roles": {
                "worker": [
                    {
                        "tool_calls": [
                            {
                                "name": "write_file",
                                "arguments": {"path": ours, "content": "ours\n"},
                            }
                        ]
                    },
                    {"tool_calls": [{"name": "finish", "arguments": {"summary": "wrote"}}]},
                ],
                "reviewer": [
                    {
                        "tool_calls": [
                            {
                                "name": "finish",
                                "arguments": {"summary": "fine", "verdict": "approve"},
                            }
                        ]
                    }
                ],
            },
        }
    )


async def _events(handle: Handle, kind: EventKind) -> list[str]:
    page: EventsPage = await handle.query(
        Queries.EVENTS, EventsRequest(from_offset=0, limit=2000), result_type=EventsPage
    )
    return [e.message for e in page.events if e.kind is kind]


async def test_a_moved_target_is_reported_and_a_rebase_round_moves_the_change_onto_it(
    client: Client, settings: Settings, worker: None, repo: Path, model: ModelServerHandle
) -> None:
    base = git(repo, "rev-parse", "HEAD")
    handle, status = await _task_moving_main(client, settings, repo, model, ours="src/new.py")
    tip = git(repo, "rev-parse", "main")
    assert status.target is not None
    assert (status.target.base_commit, status.target.tip) == (base, tip)
    assert (status.target.behind, status.target.conflicts) == (1, [])
    assert "behind main by 1 commit; merges cleanly" in status.target.message
    moved = await _events(handle, EventKind.TARGET_MOVED)
    assert any("at the gate" in m and "rebase" in m for m in moved), moved
    assert any("behind main by 1" in m for m in await _events(handle, EventKind.APPROVAL_NEEDED))
    worker_calls = model.stats()["by_role"].get("worker", 0)

    await handle.execute_update(
        Updates.REQUEST_CHANGES,
        RequestChangesInput(by="alice", feedback="", rebase=True),
        result_type=ApprovalRecord,
    )
    status = await wait_for(
        handle,
        lambda s: s.round == 2 and s.phase is Phase.AWAITING_APPROVAL,
        what="the rebased change at the gate",
    )
    assert status.target is not None and (status.target.behind, status.target.tip) == (0, tip)
    assert status.target.base_commit == tip
    assert any(
        m.startswith("rebased onto main") for m in await _events(handle, EventKind.TARGET_MOVED)
    )
    assert model.stats()["by_role"].get("worker", 0) == worker_calls  # no worker ran again
    reviews = await _events(handle, EventKind.REVIEW)
    assert sum("reviewer says" in m for m in reviews) == 2  # the rebased change was reviewed
    assert status.diff_stat is not None and status.diff_stat.files == ["src/new.py"]

    await handle.execute_update(
        Updates.APPROVE, ApproveInput(by="alice"), result_type=ApprovalRecord
    )
    result = await handle.result()
    assert result.phase is Phase.COMPLETED and result.merge is not None
    branch = result.merge.branch
    git(repo, "merge-base", "--is-ancestor", tip, branch)  # built on main's new tip
    assert git(repo, "show", f"{branch}:src/new.py") == "ours"
    assert git(repo, "show", f"{branch}:theirs.txt") == "theirs"


async def test_a_conflicting_target_is_reported_a_rebase_refused_and_never_merged_silently(
    client: Client, settings: Settings, worker: None, repo: Path, model: ModelServerHandle
) -> None:
    base = git(repo, "rev-parse", "HEAD")
    handle, status = await _task_moving_main(client, settings, repo, model, ours="README.md")
    assert status.target is not None
    assert (status.target.behind, status.target.conflicts) == (1, ["README.md"])
    assert "conflicts with its tip" in status.target.message
    moved = await _events(handle, EventKind.TARGET_MOVED)
    assert any("conflicts" in m and "resolve by hand" in m for m in moved), moved

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(
            Updates.REQUEST_CHANGES,
            RequestChangesInput(by="alice", feedback="", rebase=True),
            result_type=ApprovalRecord,
        )
    assert "cannot rebase" in str(refused.value.cause)
    assert (await wait_for_phase(handle, Phase.AWAITING_APPROVAL)).round == 1

    await handle.execute_update(
        Updates.APPROVE, ApproveInput(by="alice"), result_type=ApprovalRecord
    )
    result = await handle.result()
    assert result.phase is Phase.COMPLETED and result.merge is not None
    # Published as approved: on the old base, the conflict said again at merge.
    assert git(repo, "merge-base", result.merge.branch, "main") == base
    at_merge = [m for m in await _events(handle, EventKind.TARGET_MOVED) if "at merge" in m]
    assert at_merge and "README.md" in at_merge[0]


async def test_a_target_moved_into_a_conflict_after_the_gate_stops_the_merge(
    client: Client, settings: Settings, worker: None, repo: Path, model: ModelServerHandle
) -> None:
    handle, status = await _task_moving_main(client, settings, repo, model, ours="src/new.py")
    assert status.target is not None and status.target.conflicts == []
    (repo / "src" / "new.py").write_text("theirs, added on main after the gate\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "main adds the same file")

    approval = ApproveInput(by="alice")
    await handle.execute_update(Updates.APPROVE, approval, result_type=ApprovalRecord)
    status = await wait_for(
        handle,
        lambda s: (
            s.phase is Phase.AWAITING_APPROVAL and s.target is not None and bool(s.target.conflicts)
        ),
        what="the task back at the gate",
    )
    assert status.target is not None and status.target.conflicts == ["src/new.py"]
    assert status.published is None and status.merge is None
    moved = await _events(handle, EventKind.TARGET_MOVED)
    assert any(m.startswith("not merged: main moved since the approval") for m in moved), moved

    await handle.execute_update(Updates.APPROVE, approval, result_type=ApprovalRecord)
    result = await handle.result()  # approved again, knowing: published as it is
    assert result.phase is Phase.COMPLETED and result.merge is not None
    assert git(repo, "show", f"{result.merge.branch}:src/new.py") == "ours"


async def _activities(handle: Handle) -> list[str]:
    """The task's activity events in history order: "scheduled <name>", "completed <name>"."""
    names: dict[int, str] = {}
    order = []
    for event in (await handle.fetch_history()).events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            names[event.event_id] = (
                event.activity_task_scheduled_event_attributes.activity_type.name
            )
            order.append(f"scheduled {names[event.event_id]}")
        elif event.HasField("activity_task_completed_event_attributes"):
            scheduled = event.activity_task_completed_event_attributes.scheduled_event_id
            order.append(f"completed {names[scheduled]}")
    return order


@pytest.mark.parametrize("moved", [False, True], ids=["unmoved", "moved-into-a-conflict"])
async def test_without_a_review_the_gate_checks_the_target_beside_the_integration(
    client: Client,
    settings: Settings,
    worker: None,
    repo: Path,
    model: ModelServerHandle,
    moved: bool,
) -> None:
    """The gate's check begins with the integration; it shows the same as a check at the
    gate: an unmoved target needs nothing more, a moved one is checked again for
    conflicts with the integrated change."""
    model.set_scenario(_writing("README.md"))
    model.configure(role_latency_ms={"worker": 1000})
    handle = await _one_worker_task(client, settings, repo, review=False)
    await wait_for_phase(handle, Phase.RUNNING)
    if moved:
        _main_moves(repo)
    model.configure(role_latency_ms={})
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)

    assert status.target is not None and status.target.tip == git(repo, "rev-parse", "main")
    order = await _activities(handle)
    checks = [i for i, e in enumerate(order) if e == f"scheduled {Activities.CHECK_TARGET}"]
    assert checks[0] < order.index(f"completed {Activities.INTEGRATE_BRANCHES}"), order
    moved_events = await _events(handle, EventKind.TARGET_MOVED)
    if not moved:
        assert (status.target.behind, status.target.conflicts) == (0, [])
        assert len(checks) == 1 and moved_events == []
        return
    assert (status.target.behind, status.target.conflicts) == (1, ["README.md"])
    assert len(checks) == 2  # the second with the integrated change, for its conflicts
    assert any("at the gate" in m and "resolve by hand" in m for m in moved_events)
