"""A cancel leaves nothing behind, even while a subagent's command still runs (issue 12).

The flaky case made deterministic: a worker's step runs a command that sleeps; the
task is cancelled while it runs. When the task has ended as cancelled, the command
is dead, the step activity acknowledged its cancel before its subagent ended (so
the task's cleanup ran after it), and nothing under the task's transcripts or
worktrees reappears afterwards. Real dev server, bwrap, git and scripted model.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError

from switchboard.model_server import ModelServerHandle, parse_scenario
from switchboard.models import Phase, SubtaskSpec, TaskRequest, TaskResult
from switchboard.settings import Settings
from switchboard.wire import Workflows
from testkit import history_event_types, wait_for_phase

pytestmark = pytest.mark.integration

WATCH_SECONDS = 5.0
"""How long after the cancel nothing may reappear (a straggling step heartbeats at
2.5 s, so it would have learnt of the cancel and written by then)."""


def _running(marker: str) -> list[int]:
    """Pids of processes whose command line holds `marker`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(proc.name))
    return found


def _left_behind(settings: Settings, task_id: str) -> list[str]:
    left = []
    transcripts = settings.transcripts_dir / task_id
    if transcripts.exists():
        left += [str(p) for p in transcripts.rglob("*")] or [str(transcripts)]
    worktrees = settings.worktrees_dir / task_id
    if worktrees.exists():
        left += [str(p) for p in worktrees.iterdir()]
    return left


async def test_cancel_while_a_command_runs_leaves_nothing_behind(
    client: Client, settings: Settings, worker: None, repo: Path, model: ModelServerHandle
) -> None:
    # A unique duration, so the command is found among other tests' processes.
    marker = f"sleep 300.{uuid.uuid4().int % 10**9:09d}"
    command = f"echo started > started.txt && {marker}"
    model.set_scenario(
        parse_scenario(
            {
                "name": "sleeper",
                "roles": {
                    "worker": [
                        {
                            "tool_calls": [
                                {
                                    "name": "run",
                                    "arguments": {"command": command, "timeout_seconds": 600},
                                }
                            ]
                        },
                        {"tool_calls": [{"name": "finish", "arguments": {"summary": "slept"}}]},
                    ]
                },
            }
        )
    )
    task_id = f"task-{uuid.uuid4().hex}"
    handle = await client.start_workflow(
        Workflows.TASK,
        TaskRequest(
            goal="Sleep, then be cancelled", repo=str(repo), subtasks=[SubtaskSpec(title="A")]
        ),
        id=task_id,
        task_queue=settings.task_queue,
        result_type=TaskResult,
    )
    deadline = time.monotonic() + 90
    while not _running(marker):
        assert time.monotonic() < deadline, "the command never started"
        await asyncio.sleep(0.1)
    assert (settings.transcripts_dir / task_id).is_dir()

    cancelled_at = time.monotonic()
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    took = time.monotonic() - cancelled_at
    status = await wait_for_phase(handle, Phase.CANCELLED)
    assert status.phase is Phase.CANCELLED

    # The subagent ended only once its step acknowledged the cancel: the step's
    # cancellation is in its history, before the subagent's own.
    events = await history_event_types(client, f"{task_id}-sub1-r1")
    assert "activity_task_canceled_event_attributes" in events
    assert events.index("activity_task_canceled_event_attributes") < events.index(
        "workflow_execution_canceled_event_attributes"
    )
    # The step's heartbeat interval (2.5 s, each sent) bounds the wait: ~1 s measured.
    assert took < 10, f"the cancel took {took:.1f} s"

    assert _running(marker) == [], "the command still runs after the task was cancelled"
    assert _left_behind(settings, task_id) == []
    watch_until = time.monotonic() + WATCH_SECONDS
    while time.monotonic() < watch_until:
        await asyncio.sleep(0.2)
        assert _left_behind(settings, task_id) == [], "something reappeared after the cleanup"
        assert _running(marker) == []
