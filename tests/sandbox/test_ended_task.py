"""A step that outlives its task never brings the task's files back (issue 12).

A cancel that never reached a step (its worker cut off from the server, a lost
cancel) leaves the step running after its task's cleanup. The cleanup marks the
task ended before removing anything, so the step's next journal or transcript
write is refused and the task's folder stays gone. Real model server, bwrap, git.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities._transcripts import (
    TaskEndedError,
    mark_task_ended,
    save_transcript,
    transcript_path,
)
from activities.lifecycle import LifecycleActivities
from activities.llm import LlmActivities
from activities.repo import RepoActivities
from activities.sandbox import Sandbox
from activities.step import StepActivities
from activities.tools import ToolActivities
from switchboard import model_server
from switchboard.contracts import ChatMessage, CleanupInput, LlmTurnInput, StepInput
from switchboard.model_server import ModelServerHandle, Scenario
from switchboard.models import Role
from switchboard.settings import Settings
from switchboard.wire import Errors
from tests.sandbox.helpers import Checkout

BWRAP = pytest.mark.parametrize("sandbox", ["bwrap"], indirect=True)


@pytest.fixture(scope="module")
def server() -> Iterator[ModelServerHandle]:
    with model_server.running_model_server() as handle:
        yield handle


@pytest.fixture
def settings(tmp_path: Path, server: ModelServerHandle) -> Settings:
    return Settings(
        data_dir=tmp_path,
        sandbox="bwrap",
        llm_base_url=server.base_url,
        sandbox_command_timeout_seconds=60,
    )


@pytest.fixture
async def steps(settings: Settings, sandbox: Sandbox) -> AsyncIterator[StepActivities]:
    llm = LlmActivities(settings)
    yield StepActivities(llm, ToolActivities(settings, sandbox))
    await llm.close()


def script(server: ModelServerHandle, command: str) -> None:
    call = {"name": "run", "arguments": {"command": command, "timeout_seconds": 60}}
    server.set_scenario(Scenario.model_validate({"roles": {"worker": [{"tool_calls": [call]}]}}))
    server.configure(latency_ms=0)
    server.reset()


def step_input(checkout: Checkout) -> StepInput:
    return StepInput(
        turn=LlmTurnInput(
            transcript_id=f"{checkout.task_id}/0/r1",
            call_id=f"{checkout.task_id}/0/r1/0",
            role=Role.WORKER,
            expected_length=0,
            new_messages=[ChatMessage(role="user", content="Do it")],
            task_id=checkout.task_id,
        ),
        sandbox=checkout.spec(Role.WORKER),
        base_commit=checkout.base_commit,
        start_sandbox=True,
    )


@BWRAP
async def test_a_step_of_an_ended_task_pays_and_runs_nothing(
    steps: StepActivities, server: ModelServerHandle, checkout: Checkout, settings: Settings
) -> None:
    script(server, "echo ran > ran.txt")
    mark_task_ended(settings.transcripts_dir, checkout.task_id)

    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(steps.subagent_step, step_input(checkout))

    assert refused.value.type == Errors.TASK_ENDED and refused.value.non_retryable
    assert server.stats()["by_role"] == {}
    assert not (checkout.worktree / "ran.txt").exists()
    assert not (settings.transcripts_dir / checkout.task_id).exists()


@BWRAP
async def test_a_step_that_outlives_its_task_does_not_recreate_its_files(
    steps: StepActivities,
    server: ModelServerHandle,
    checkout: Checkout,
    settings: Settings,
    sandbox: Sandbox,
) -> None:
    script(server, "sleep 45")
    step = asyncio.create_task(ActivityEnvironment().run(steps.subagent_step, step_input(checkout)))
    journal = settings.transcripts_dir / checkout.task_id / "0" / "r1" / "0.tools.json"
    for _ in range(300):  # until the command has started (journaled before it runs)
        if journal.exists():
            break
        await asyncio.sleep(0.05)
    assert journal.exists()

    # The task's cleanup, while the step (never told of any cancel) still runs.
    cleanup = LifecycleActivities(RepoActivities(settings), sandbox)
    await ActivityEnvironment().run(cleanup.cleanup_task, CleanupInput(task_id=checkout.task_id))
    assert not (settings.transcripts_dir / checkout.task_id).exists()

    # Its command was killed by the cleanup; what it would record is refused.
    with pytest.raises(ApplicationError) as refused:
        await asyncio.wait_for(step, 30)
    assert refused.value.type == Errors.TASK_ENDED
    assert not (settings.transcripts_dir / checkout.task_id).exists()


def test_a_write_racing_the_cleanup_removes_what_it_wrote(tmp_path: Path) -> None:
    """Checked before the cleanup's mark, written after its removal: undone at once."""
    root = tmp_path / "transcripts"
    path = transcript_path(root, "task-x/1/r1")
    save_transcript(root, path, [ChatMessage(role="user", content="hi")])
    assert path.exists()
    mark_task_ended(root, "task-x")
    with pytest.raises(TaskEndedError):
        save_transcript(root, path, [ChatMessage(role="user", content="again")])
    assert not (root / "task-x").exists()
    # Another task's files are untouched.
    other = transcript_path(root, "task-y/1/r1")
    save_transcript(root, other, [])
    assert other.exists()
