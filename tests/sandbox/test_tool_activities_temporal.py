"""The tool activities through a real Temporal dev server and the pydantic converter."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner

from activities.sandbox import Sandbox
from activities.tools import ToolActivities
from switchboard.contracts import RunToolsInput, RunToolsResult, SandboxInfo, SandboxSpec
from switchboard.models import Role
from switchboard.settings import Settings
from switchboard.tools import CheckedCall, check_call
from switchboard.wire import Activities, Errors
from tests.conftest import new_worker
from tests.sandbox.helpers import Checkout


@workflow.defn(sandboxed=False)
class RunToolsOnce:
    """Start the sandbox, run the calls; what a subagent step does, minus the model."""

    @workflow.run
    async def run(self, request: RunToolsInput) -> RunToolsResult:
        await workflow.execute_activity(
            Activities.START_SANDBOX,
            request.sandbox,
            result_type=SandboxInfo,
            start_to_close_timeout=timedelta(seconds=60),
        )
        result: RunToolsResult = await workflow.execute_activity(
            Activities.RUN_TOOLS,
            request,
            result_type=RunToolsResult,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_attempts=3),  # non-retryable errors stop at 1
        )
        return result


async def test_run_tools_over_temporal(
    client: Client, settings: Settings, sandbox: Sandbox, checkout: Checkout
) -> None:
    calls = [
        check_call(Role.WORKER, "1", "write_file", '{"path": "a/b.txt", "content": "hi"}'),
        check_call(Role.WORKER, "2", "run", '{"command": "cat a/b.txt; exit 4"}'),
    ]
    request = RunToolsInput(
        sandbox=checkout.spec(Role.WORKER),
        base_commit=checkout.base_commit,
        calls=[c for c in calls if isinstance(c, CheckedCall)],
    )
    assert len(request.calls) == 2
    tools = ToolActivities(settings, sandbox)
    activities = [tools.start_sandbox, tools.run_tools]
    async with new_worker(
        client, RunToolsOnce, activities=activities, workflow_runner=UnsandboxedWorkflowRunner()
    ) as worker:
        result = await client.execute_workflow(
            RunToolsOnce.run, request, id=f"tools-{uuid.uuid4()}", task_queue=worker.task_queue
        )
    wrote, ran = result.outcomes
    assert wrote.ok and (checkout.worktree / "a" / "b.txt").read_text() == "hi"
    assert not ran.ok and ran.exit_code == 4 and "hi" in ran.output


async def test_an_unusable_sandbox_fails_the_workflow_step_once(
    client: Client, settings: Settings, sandbox: Sandbox, checkout: Checkout
) -> None:
    spec = SandboxSpec(
        sandbox_id=f"{checkout.task_id}-7",
        worktree_path=str(checkout.worktree.parent / "missing"),
        role=Role.WORKER,
    )
    request = RunToolsInput(sandbox=spec, base_commit=checkout.base_commit, calls=[])
    tools = ToolActivities(settings, sandbox)
    async with new_worker(
        client,
        RunToolsOnce,
        activities=[tools.start_sandbox, tools.run_tools],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ) as worker:
        with pytest.raises(WorkflowFailureError) as caught:
            await client.execute_workflow(
                RunToolsOnce.run, request, id=f"tools-{uuid.uuid4()}", task_queue=worker.task_queue
            )
    activity_error = caught.value.cause
    assert isinstance(activity_error, ActivityError)
    assert (
        activity_error.retry_state is not None
        and activity_error.retry_state.name == "NON_RETRYABLE_FAILURE"
    )
    cause = activity_error.cause
    assert isinstance(cause, ApplicationError) and cause.type == Errors.SANDBOX_UNAVAILABLE
    assert "does not exist" in cause.message
