"""A retried `subagent_step` never runs a tool call twice (real model server, sandbox, git).

The step runs in an `ActivityEnvironment` twice with the same input, as Temporal
retries it after a worker crash. A crash inside a command is stood in for by
cancelling the first attempt mid-command, which leaves the journal exactly as a
SIGKILL would (the call started, no outcome); tests/integration/test_durability.py
kills a real worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.llm import LlmActivities
from activities.sandbox import Sandbox
from activities.step import INTERRUPTED, StepActivities
from activities.tools import ToolActivities
from switchboard import model_server
from switchboard.contracts import ChatMessage, LlmTurnInput, StepInput
from switchboard.model_server import ModelServerHandle, Scenario
from switchboard.models import Role
from switchboard.settings import Settings
from tests.sandbox.helpers import Checkout, git

APPEND = "echo once >> notes/append.txt"


@pytest.fixture(scope="module")
def server() -> Iterator[ModelServerHandle]:
    with model_server.running_model_server() as handle:
        yield handle


@pytest.fixture
def settings(tmp_path: Path, server: ModelServerHandle) -> Settings:
    # The checkout lays out tmp_path/mirrors and tmp_path/worktrees, as a host does.
    return Settings(
        data_dir=tmp_path,
        sandbox="bwrap",
        llm_base_url=server.base_url,
        sandbox_command_timeout_seconds=20,
    )


@pytest.fixture
async def steps(settings: Settings, sandbox: Sandbox) -> AsyncIterator[StepActivities]:
    llm = LlmActivities(settings)
    yield StepActivities(llm, ToolActivities(settings, sandbox))
    await llm.close()


def script(server: ModelServerHandle, *commands: str) -> None:
    calls = [{"name": "run", "arguments": {"command": c}} for c in commands]
    server.set_scenario(Scenario.model_validate({"roles": {"worker": [{"tool_calls": calls}]}}))
    server.configure(latency_ms=0)
    server.reset()


def step_input(checkout: Checkout) -> StepInput:
    return StepInput(
        turn=LlmTurnInput(
            transcript_id=f"{checkout.task_id}/0/r1",
            call_id=f"{checkout.task_id}/0/r1/0",
            role=Role.WORKER,
            expected_length=0,
            new_messages=[
                ChatMessage(role="system", content="You are a worker."),
                ChatMessage(role="user", content="Append a line"),
            ],
            task_id=checkout.task_id,
        ),
        sandbox=checkout.spec(Role.WORKER),
        base_commit=checkout.base_commit,
        start_sandbox=True,
    )


def appended(checkout: Checkout) -> list[str]:
    path = checkout.worktree / "notes" / "append.txt"
    return path.read_text().splitlines() if path.exists() else []


async def test_a_retried_step_reuses_finished_calls(
    steps: StepActivities, server: ModelServerHandle, checkout: Checkout
) -> None:
    """The worker died after the tools ran, before the step completed."""
    script(server, "mkdir -p notes", APPEND)
    first = await ActivityEnvironment().run(steps.subagent_step, step_input(checkout))
    retried = await ActivityEnvironment().run(steps.subagent_step, step_input(checkout))

    assert appended(checkout) == ["once"]
    assert [o.ok for o in first.outcomes] == [True, True]
    assert retried.outcomes == first.outcomes
    assert server.stats()["by_role"] == {"worker": 1}


async def test_an_interrupted_call_is_rolled_back_and_not_run_again(
    steps: StepActivities, server: ModelServerHandle, checkout: Checkout, settings: Settings
) -> None:
    (checkout.worktree / "README.md").write_text("edited before the step\n")
    script(
        server,
        "mkdir -p notes && echo kept > notes/kept.txt",
        f"{APPEND} && echo changed >> README.md && rm src/calc.py && sleep 30",
    )
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(seconds=2))
    first = asyncio.create_task(env.run(steps.subagent_step, step_input(checkout)))
    for _ in range(200):  # until the second command is in its sleep
        if appended(checkout):
            break
        await asyncio.sleep(0.05)
    assert appended(checkout) == ["once"]
    env.cancel()  # the attempt ends mid-command, its outcome never journaled
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(first, 10)

    retried = await ActivityEnvironment().run(steps.subagent_step, step_input(checkout))

    assert [o.ok for o in retried.outcomes] == [True, False]
    assert retried.outcomes[1].output == INTERRUPTED
    # Back to the state before the interrupted call, which did not run again.
    assert appended(checkout) == []
    assert (checkout.worktree / "notes" / "kept.txt").read_text() == "kept\n"
    assert (checkout.worktree / "README.md").read_text() == "edited before the step\n"
    assert (checkout.worktree / "src" / "calc.py").exists()
    assert server.stats()["by_role"] == {"worker": 1}
    # The worktree's own index and branch are untouched by checkpoints.
    assert git(checkout.worktree, "status", "--porcelain") == "M README.md\n?? notes/".strip()
    journal = settings.transcripts_dir / checkout.task_id / "0" / "r1" / "0.tools.json"
    entries = json.loads(journal.read_text())["entries"]
    assert [e["outcome"]["ok"] for e in entries] == [True, False]


async def test_an_interrupted_patch_is_applied_again_to_the_checkpoint(
    steps: StepActivities, server: ModelServerHandle, checkout: Checkout, settings: Settings
) -> None:
    """A patch cut short by a crash: rolled back, then applied again, once."""
    patch = "--- /dev/null\n+++ b/notes/a.txt\n@@ -0,0 +1 @@\n+whole\n"
    call = {"name": "apply_patch", "arguments": {"patch": patch}}
    server.set_scenario(Scenario.model_validate({"roles": {"worker": [{"tool_calls": [call]}]}}))
    server.reset()
    await ActivityEnvironment().run(steps.subagent_step, step_input(checkout))
    assert (checkout.worktree / "notes" / "a.txt").read_text() == "whole\n"
    # As a SIGKILL mid-patch leaves it: the call journaled as started, a torn tree.
    journal = settings.transcripts_dir / checkout.task_id / "0" / "r1" / "0.tools.json"
    document = json.loads(journal.read_text())
    del document["entries"][0]["outcome"]
    journal.write_text(json.dumps(document))
    (checkout.worktree / "notes" / "a.txt").write_text("who")
    (checkout.worktree / "notes" / "stray.txt").write_text("half-made\n")

    retried = await ActivityEnvironment().run(steps.subagent_step, step_input(checkout))

    assert [o.ok for o in retried.outcomes] == [True], retried.outcomes
    assert (checkout.worktree / "notes" / "a.txt").read_text() == "whole\n"
    assert not (checkout.worktree / "notes" / "stray.txt").exists()
    assert server.stats()["by_role"] == {"worker": 1}
