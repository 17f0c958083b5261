"""What is slow or awkward on the real stack, on the time-skipping server in seconds."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from entrypoints.worker import workflow_runner
from switchboard.contracts import PreparedRepo, SubagentInput
from switchboard.models import (
    ApprovalRecord,
    ApproveInput,
    Budget,
    EventKind,
    EventsPage,
    EventsRequest,
    Phase,
    SubagentState,
    SubtaskSpec,
    TaskRequest,
    TaskResult,
    TaskStatus,
)
from switchboard.wire import Queries, Updates
from tests.timeskip.fakes import Fakes
from workflows import DelegatedTaskWorkflow, SubagentWorkflow


@asynccontextmanager
async def worker(client: Client, fakes: Fakes) -> AsyncIterator[str]:
    queue = f"timeskip-{uuid.uuid4()}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[DelegatedTaskWorkflow, SubagentWorkflow],
        activities=fakes.activities(),
        workflow_runner=workflow_runner(),
    ):
        yield queue


async def start_task(client: Client, queue: str) -> WorkflowHandle[Any, TaskResult]:
    request = TaskRequest(goal="g", repo="/nowhere/repo")
    return await client.start_workflow(
        DelegatedTaskWorkflow.run, request, id=f"task-{uuid.uuid4().hex}", task_queue=queue
    )


async def status_of(handle: WorkflowHandle[Any, TaskResult]) -> TaskStatus:
    status: TaskStatus = await handle.query(Queries.STATUS, result_type=TaskStatus)
    return status


async def until_phase(handle: WorkflowHandle[Any, TaskResult], phase: Phase) -> TaskStatus:
    for _ in range(500):
        status = await status_of(handle)
        if status.phase is phase:
            return status
        await asyncio.sleep(0.02)
    raise AssertionError(f"never reached {phase}: {status.phase}")


async def test_an_approval_three_days_later_still_merges(env: WorkflowEnvironment) -> None:
    fakes = Fakes()
    async with worker(env.client, fakes) as queue:
        handle = await start_task(env.client, queue)
        waiting = await until_phase(handle, Phase.AWAITING_APPROVAL)
        await env.sleep(timedelta(days=3))
        assert (await status_of(handle)).phase is Phase.AWAITING_APPROVAL
        record = await handle.execute_update(
            Updates.APPROVE, ApproveInput(by="ann"), result_type=ApprovalRecord
        )
        result = await handle.result()
    assert result.phase is Phase.COMPLETED and result.merge is not None and result.merge.merged
    assert record.at - waiting.updated_at >= timedelta(days=3)
    assert fakes.cleanups == 1


async def test_plan_retries_back_off_then_succeed(env: WorkflowEnvironment) -> None:
    fakes = Fakes(plan_failures=2)
    async with worker(env.client, fakes) as queue:
        handle = await start_task(env.client, queue)
        await until_phase(handle, Phase.AWAITING_APPROVAL)
        page = await handle.query(
            Queries.EVENTS, EventsRequest(from_offset=0, limit=50), result_type=EventsPage
        )
        await handle.cancel()
    assert fakes.plan_attempts == [1, 2, 3]
    ready = next(e for e in page.events if e.message.startswith("repository ready"))
    planned = next(e for e in page.events if e.kind is EventKind.PLAN)
    # PLAN_RETRY: 1 s, then 2 s (backoff 2.0) on the workflow's clock, skipped in real time.
    assert planned.at - ready.at >= timedelta(seconds=3)


async def test_a_planner_failing_every_attempt_fails_the_task(env: WorkflowEnvironment) -> None:
    fakes = Fakes(plan_failures=99)
    async with worker(env.client, fakes) as queue:
        handle = await start_task(env.client, queue)
        try:
            await handle.result()
        except WorkflowFailureError as failure:
            assert "the planner answered nonsense" in str(failure.cause)
        else:
            raise AssertionError("the task did not fail")
        status = await status_of(handle)
    assert len(fakes.plan_attempts) == 3 and status.phase is Phase.FAILED


async def test_a_planner_outage_is_ridden_out_with_the_transient_policy(
    env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(plan_outages=5)  # more than the three tries a bad plan gets
    async with worker(env.client, fakes) as queue:
        handle = await start_task(env.client, queue)
        await env.sleep(timedelta(minutes=2))  # 1+2+4+8+16 s of backoff, skipped
        status = await until_phase(handle, Phase.AWAITING_APPROVAL)
        await handle.cancel()
    assert fakes.plan_attempts == [1, 2, 3, 4, 5, 6]
    assert [s.title for s in status.subagents] == ["the only subtask"]


def subagent_input(queue: str, **extra: object) -> SubagentInput:
    prepared = PreparedRepo(
        repo="/r",
        mirror_path="/m",
        base_ref="main",
        base_commit="0" * 40,
        is_local=True,
        host_queue=queue,
    )
    values: dict[str, object] = {
        "task_id": f"task-{uuid.uuid4().hex}",
        "index": 1,
        "goal": "g",
        "subtask": SubtaskSpec(title="t"),
        "prepared": prepared,
        "branch": "switchboard/t/1",
        "start_commit": "0" * 40,
        "budget": Budget(max_steps=500),
        **extra,
    }
    return SubagentInput.model_validate(values)


async def test_a_wall_time_budget_ends_a_subagent(env: WorkflowEnvironment) -> None:
    # Step 2 meets an unavailable model 6 times: TRANSIENT_RETRY backs off 1+2+4+8+16+30 s.
    fakes = Fakes(tool_steps=100, flaky_step=1, flaky_attempts=6)
    async with worker(env.client, fakes) as queue:
        inp = subagent_input(queue, budget=Budget(max_steps=500, max_wall_seconds=60))
        result = await env.client.execute_workflow(
            SubagentWorkflow.run, inp, id=f"sub-{uuid.uuid4().hex}", task_queue=queue
        )
    assert result.state is SubagentState.BUDGET_EXHAUSTED
    assert result.error == "budget spent: 60 s of wall time"
    assert result.steps == 2


async def test_a_long_subagent_continues_as_new(env: WorkflowEnvironment) -> None:
    fakes = Fakes(tool_steps=120)
    async with worker(env.client, fakes) as queue:
        inp = subagent_input(queue, history_limit=50)
        handle = await env.client.start_workflow(
            SubagentWorkflow.run, inp, id=f"sub-{uuid.uuid4().hex}", task_queue=queue
        )
        result = await handle.result()
        runs, run_id = 1, handle.first_execution_run_id
        while True:
            history = await env.client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
            last = history.events[-1]
            if not last.HasField("workflow_execution_continued_as_new_event_attributes"):
                break
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            runs += 1
    assert result.state is SubagentState.DONE and result.steps == 121
    assert result.tool_calls == 120 and result.tokens == 1210
    assert runs > 5  # each run stopped near 50 events of history, carrying the loop on
