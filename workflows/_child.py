"""Running one subagent as a child workflow of its task."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from switchboard.contracts import SubagentInput, SubagentResult
    from switchboard.models import SubagentState
    from workflows._status import TaskBook, failure_message
    from workflows.subagent import SubagentWorkflow


async def run_child(
    book: TaskBook, child_id: str, summary: str, input: SubagentInput
) -> SubagentResult:
    """Run one subagent (announced once started); its failure is a result, not a raise,
    so the others carry on."""
    try:
        handle = await workflow.start_child_workflow(
            SubagentWorkflow.run,
            input,
            id=child_id,
            task_queue=input.prepared.host_queue,
            static_summary=summary[:200],
        )
        book.announce_start(input, workflow.now())
        result: SubagentResult = await handle
    except ChildWorkflowError as err:
        if is_cancelled_exception(err):
            raise  # the task is being cancelled: not a failed subagent
        result = SubagentResult(
            index=input.index,
            state=SubagentState.FAILED,
            branch=input.branch,
            error=failure_message(err),
        )
    return result
