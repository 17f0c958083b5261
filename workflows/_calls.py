"""One typed seam per activity: its wire name, input, result and options bound together.

Workflow code calls `await calls.subagent_step(StepInput(...), queue=host)` instead of
`workflow.execute_activity(Activities.SUBAGENT_STEP, ..., result_type=..., timeouts...)`,
so mypy checks each call against the activity's contract and the timeouts, retry
policies and heartbeats of a call are written once (their values: `_policy`).
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from switchboard.contracts import (
        CleanupInput,
        FinishSubagentInput,
        FinishSubagentResult,
        IntegrateInput,
        MergeOutcome,
        Plan,
        PlanInput,
        PreparedRepo,
        PrepareRepoInput,
        StepInput,
        StepResult,
        TargetInput,
        WorktreeInfo,
        WorktreeInput,
    )
    from switchboard.models import TargetCheck
    from switchboard.repo_refs import redact_repo
    from switchboard.wire import Activities, Patches
    from workflows import _policy as policy

T = TypeVar("T")


async def prepare_repo(inp: PrepareRepoInput) -> PreparedRepo:
    """Mirror the repository on some host (shared queue); the result names that host."""
    result: PreparedRepo = await workflow.execute_activity(
        Activities.PREPARE_REPO,
        inp,
        result_type=PreparedRepo,
        start_to_close_timeout=policy.PREPARE_REPO_TIMEOUT,
        heartbeat_timeout=policy.LONG_HEARTBEAT_TIMEOUT,
        retry_policy=policy.TRANSIENT_RETRY,
        summary=f"mirror {redact_repo(inp.repo)}",
    )
    return result


async def plan_subtasks(inp: PlanInput) -> Plan:
    """Ask the planner model for the subtasks (shared queue)."""
    result: Plan = await workflow.execute_activity(
        Activities.PLAN_SUBTASKS,
        inp,
        result_type=Plan,
        start_to_close_timeout=policy.PLAN_TIMEOUT,
        heartbeat_timeout=policy.HEARTBEAT_TIMEOUT,
        retry_policy=policy.PLAN_RETRY,
        summary="plan subtasks",
    )
    return result


async def create_worktree(inp: WorktreeInput, *, queue: str) -> WorktreeInfo:
    return await _subagent_activity(
        Activities.CREATE_WORKTREE,
        inp,
        WorktreeInfo,
        task_queue=queue,
        start_to_close_timeout=policy.WORKTREE_TIMEOUT,
        heartbeat_timeout=policy.LONG_HEARTBEAT_TIMEOUT,
        retry_policy=policy.TRANSIENT_RETRY,
        summary=f"worktree {inp.branch}",
    )


async def subagent_step(inp: StepInput, *, queue: str, number: int) -> StepResult:
    """Step `number` of a subagent: one model turn and the tools it asked for."""
    return await _subagent_activity(
        Activities.SUBAGENT_STEP,
        inp,
        StepResult,
        task_queue=queue,
        start_to_close_timeout=policy.STEP_TIMEOUT,
        heartbeat_timeout=policy.HEARTBEAT_TIMEOUT,
        retry_policy=policy.TRANSIENT_RETRY,
        summary=f"step {number}",
    )


async def finish_subagent(
    inp: FinishSubagentInput, *, queue: str, branch: str
) -> FinishSubagentResult:
    """Commit a worker's work (when `inp.commit` is set) and stop the sandbox."""
    return await _subagent_activity(
        Activities.FINISH_SUBAGENT,
        inp,
        FinishSubagentResult,
        task_queue=queue,
        start_to_close_timeout=policy.COMMIT_TIMEOUT,
        heartbeat_timeout=policy.HEARTBEAT_TIMEOUT,
        retry_policy=policy.TRANSIENT_RETRY,
        summary=f"commit {branch}, stop sandbox" if inp.commit else "stop sandbox",
    )


async def integrate_branches(inp: IntegrateInput, *, queue: str) -> MergeOutcome:
    result: MergeOutcome = await workflow.execute_activity(
        Activities.INTEGRATE_BRANCHES,
        inp,
        result_type=MergeOutcome,
        task_queue=queue,
        start_to_close_timeout=policy.INTEGRATE_TIMEOUT,
        heartbeat_timeout=policy.LONG_HEARTBEAT_TIMEOUT,
        retry_policy=policy.TRANSIENT_RETRY,
        summary="merge subagent branches" + (" and publish" if inp.publish else ""),
    )
    return result


async def check_target(inp: TargetInput, *, queue: str) -> TargetCheck:
    """The change against its target branch's current tip (reads the user's repository)."""
    result: TargetCheck = await workflow.execute_activity(
        Activities.CHECK_TARGET,
        inp,
        result_type=TargetCheck,
        task_queue=queue,
        start_to_close_timeout=policy.INTEGRATE_TIMEOUT,
        heartbeat_timeout=policy.LONG_HEARTBEAT_TIMEOUT,
        retry_policy=policy.TRANSIENT_RETRY,
        summary=f"compare with {inp.branch}",
    )
    return result


async def cleanup_task(inp: CleanupInput, *, queue: str) -> None:
    await workflow.execute_activity(
        Activities.CLEANUP_TASK,
        inp,
        task_queue=queue,
        start_to_close_timeout=policy.CLEANUP_TIMEOUT,
        retry_policy=policy.TRANSIENT_RETRY,
        summary="remove worktrees and sandboxes",
    )


async def _subagent_activity(activity: str, inp: object, result_type: type[T], **options: Any) -> T:
    """An activity of a subagent workflow, which a cancel of the subagent waits for.

    The cancel reaches the activity at its next heartbeat (within `HEARTBEAT_TIMEOUT`
    for a step); it stops its model call or command and writes nothing more, and only
    then does the subagent end, so the task's cleanup never runs beside it. An activity
    that ended otherwise once the cancel was asked (it finished first, or its worker
    was lost) still ends the subagent as cancelled. Runs recorded before this patch
    keep the old behaviour (the subagent ended at once).

    Raises:
        asyncio.CancelledError: the subagent was cancelled.
    """
    waits = workflow.patched(Patches.SUBAGENT_CANCEL_WAITS)
    try:
        result: T = await workflow.execute_activity(
            activity,
            inp,
            result_type=result_type,
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
            if waits
            else ActivityCancellationType.TRY_CANCEL,
            **options,
        )
    except ActivityError as err:
        if waits and workflow.cancellation_reason() is not None:
            raise asyncio.CancelledError("the subagent was cancelled") from err
        raise
    if waits and workflow.cancellation_reason() is not None:
        raise asyncio.CancelledError("the subagent was cancelled")
    return result
