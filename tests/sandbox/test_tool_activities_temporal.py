"""The step activity's tools through a real Temporal dev server and the pydantic converter."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner

from activities.llm import LlmActivities
from activities.sandbox import Sandbox
from activities.step import StepActivities
from activities.tools import ToolActivities
from switchboard.contracts import ChatMessage, LlmTurnInput, SandboxSpec, StepInput, StepResult
from switchboard.model_server import (
    RoleScript,
    Scenario,
    ScriptedRole,
    ToolCallSpec,
    Turn,
    running_model_server,
)
from switchboard.models import Role
from switchboard.settings import Settings
from switchboard.wire import Activities, Errors
from tests.conftest import new_worker
from tests.sandbox.helpers import Checkout

WRITE_THEN_RUN = Scenario(
    roles={
        ScriptedRole.WORKER: RoleScript(
            turns=[
                Turn(
                    tool_calls=[
                        ToolCallSpec(
                            name="write_file", arguments={"path": "a/b.txt", "content": "hi"}
                        ),
                        ToolCallSpec(name="run", arguments={"command": "cat a/b.txt; exit 4"}),
                    ]
                )
            ]
        )
    }
)


@workflow.defn(sandboxed=False)
class StepOnce:
    """One first step of a subagent: start the sandbox, a model turn, its tools."""

    @workflow.run
    async def run(self, request: StepInput) -> StepResult:
        result: StepResult = await workflow.execute_activity(
            Activities.SUBAGENT_STEP,
            request,
            result_type=StepResult,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_attempts=3),  # non-retryable errors stop at 1
        )
        return result


def step_input(spec: SandboxSpec, base_commit: str) -> StepInput:
    turn = LlmTurnInput(
        transcript_id=f"{spec.sandbox_id}/r1",
        call_id=f"{spec.sandbox_id}/r1/0",
        role=Role.WORKER,
        expected_length=0,
        new_messages=[ChatMessage(role="user", content="write a/b.txt")],
    )
    return StepInput(turn=turn, sandbox=spec, base_commit=base_commit, start_sandbox=True)


@pytest.fixture
async def steps(
    settings: Settings, sandbox: Sandbox, checkout: Checkout
) -> AsyncIterator[StepActivities]:
    # The step checkpoints only worktrees of its own host: the checkout's data dir.
    host = settings.model_copy(update={"data_dir": checkout.worktree.parents[2]})
    with running_model_server(WRITE_THEN_RUN) as model:
        llm = LlmActivities(host.model_copy(update={"llm_base_url": model.base_url}))
        yield StepActivities(llm, ToolActivities(host, sandbox))
        await llm.close()


async def test_step_tools_over_temporal(
    client: Client, steps: StepActivities, checkout: Checkout
) -> None:
    request = step_input(checkout.spec(Role.WORKER), checkout.base_commit)
    async with new_worker(
        client,
        StepOnce,
        activities=[steps.subagent_step],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ) as worker:
        result = await client.execute_workflow(
            StepOnce.run, request, id=f"tools-{uuid.uuid4()}", task_queue=worker.task_queue
        )
    wrote, ran = result.outcomes
    assert wrote.ok and (checkout.worktree / "a" / "b.txt").read_text() == "hi"
    assert not ran.ok and ran.exit_code == 4 and "hi" in ran.output


async def test_an_unusable_sandbox_fails_the_workflow_step_once(
    client: Client, steps: StepActivities, checkout: Checkout
) -> None:
    spec = SandboxSpec(
        sandbox_id=f"{checkout.task_id}-7",
        worktree_path=str(checkout.worktree.parent / "missing"),
        role=Role.WORKER,
    )
    async with new_worker(
        client,
        StepOnce,
        activities=[steps.subagent_step],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ) as worker:
        with pytest.raises(WorkflowFailureError) as caught:
            await client.execute_workflow(
                StepOnce.run,
                step_input(spec, checkout.base_commit),
                id=f"tools-{uuid.uuid4()}",
                task_queue=worker.task_queue,
            )
    activity_error = caught.value.cause
    assert isinstance(activity_error, ActivityError)
    assert (
        activity_error.retry_state is not None
        and activity_error.retry_state.name == "NON_RETRYABLE_FAILURE"
    )
    cause = activity_error.cause
    assert isinstance(cause, ApplicationError) and cause.type == Errors.SANDBOX_UNAVAILABLE
    assert "was lost (deleted on the host)" in cause.message  # checked before the model call
