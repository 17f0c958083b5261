"""One subagent: a model in a loop with tools, in its own worktree and sandbox.

The process: create the worktree (a first run only), then one `subagent_step`
activity per step — a model turn, the role check of each tool call it asked for
(on the host, before any call reaches the sandbox; a refused call is answered to
the model as an error), the allowed calls run in the sandbox, which the run's first
step starts — until the model calls `finish` or a budget is spent; then one
`finish_subagent` activity commits a worker's work and stops the sandbox. A crash
resumes at the last completed step and no finished model call is paid twice. A long
run continues-as-new with its loop state (`SubagentCheckpoint`).

Bookkeeping lives beside it: the loop state in `_steps`, report batching in
`_progress`, the activity seams in `_calls`.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from switchboard import metrics, prompts
    from switchboard.contracts import (
        ChatMessage,
        CommitInput,
        FinishSubagentInput,
        LlmTurnInput,
        Progress,
        SandboxSpec,
        StepInput,
        SubagentInput,
        SubagentResult,
        WorktreeInput,
    )
    from switchboard.models import Role, SteerInput, SubagentState
    from switchboard.step_heartbeat import StepWaiting
    from switchboard.tools import DeniedCall
    from switchboard.wire import Queries, Signals, Workflows
    from workflows import _calls as calls
    from workflows._progress import STEP, WAITING, ProgressBatcher, Report
    from workflows._steps import StepEnd, SubagentRun, describe_step


@workflow.defn(name=Workflows.SUBAGENT)
class SubagentWorkflow:
    def __init__(self) -> None:
        self._guidance: list[str] = []
        self._result: SubagentResult | None = None
        self._last_report: asyncio.Task[None] | None = None
        self._batcher = ProgressBatcher()

    # ---- handlers ---------------------------------------------------------------------

    @workflow.signal(name=Signals.STEER)
    def steer(self, steer: SteerInput) -> None:
        self._guidance.append(steer.guidance)

    @workflow.signal(name=Signals.STEP_WAITING)
    def step_waiting(self, waiting: StepWaiting) -> None:
        """The running step still waits (its activity says so at 30 s, 60 s, ...)."""
        data: dict[str, object] = {"stage": waiting.stage.value, "seconds": waiting.seconds}
        self._report(Report(WAITING, waiting.message, data))

    @workflow.query(name=Queries.STATUS)
    def status(self) -> SubagentResult | None:
        return self._result

    # ---- the business process ---------------------------------------------------------

    @workflow.run
    async def run(self, input: SubagentInput) -> SubagentResult:
        self._guidance.extend(input.guidance)
        state = await self._begin(input)
        result = state.result
        self._result = result
        sandbox = SandboxSpec(
            sandbox_id=f"{input.task_id}-{input.index}",
            worktree_path=state.worktree_path,
            role=input.subtask.role,
            mirror_path=input.prepared.mirror_path,
        )
        if await self._work_or_stop(input, state, sandbox):
            result.state = SubagentState.DONE
        elif input.subtask.role is Role.WORKER:
            state.fail_if_idle()
        ended = await calls.finish_subagent(
            FinishSubagentInput(sandbox_id=sandbox.sandbox_id, commit=_commit_of(input, state)),
            queue=input.prepared.host_queue,
            branch=input.branch,
        )
        if ended.commit is not None:
            result.head = ended.commit.head
            result.diff_stat = ended.commit.diff_stat
            if ended.commit.notes:  # what the host changed in the work before committing it
                result.summary = "\n".join([result.summary or "", *ended.commit.notes]).strip()
        self._send(self._batcher.release())  # the parent reads the end from the result
        await self._flush_reports()
        return result

    async def _begin(self, input: SubagentInput) -> SubagentRun:
        """A first run creates the worktree and the first prompt; a continued one resumes."""
        if input.resume is not None:
            return SubagentRun.resumed(input.resume)
        worktree = await calls.create_worktree(
            WorktreeInput(
                task_id=input.task_id,
                index=input.index,
                mirror_path=input.prepared.mirror_path,
                base_commit=input.start_commit,
                branch=input.branch,
                fresh=input.fresh,
            ),
            queue=input.prepared.host_queue,
        )
        role = input.subtask.role
        if role is Role.REVIEWER:
            first_prompt = prompts.review_prompt(input.goal, input.review_titles)
        else:
            first_prompt = prompts.subtask_prompt(
                input.goal, input.subtask, feedback=input.feedback, round_number=input.round
            )
        return SubagentRun(
            result=SubagentResult(
                index=input.index, state=SubagentState.RUNNING, branch=input.branch
            ),
            worktree_path=worktree.path,
            started=workflow.now(),
            pending=[
                ChatMessage(role="system", content=prompts.SYSTEM_PROMPTS[role]),
                ChatMessage(role="user", content=first_prompt),
            ],
        )

    async def _work_or_stop(
        self, input: SubagentInput, state: SubagentRun, sandbox: SandboxSpec
    ) -> bool:
        """`_work`; when a step fails for good, the sandbox is stopped before the run
        fails, so a retry of this subagent starts a new one (a Docker container keeps
        the mounts it started with, e.g. a worktree since lost)."""
        try:
            return await self._work(input, state, sandbox)
        except ActivityError as err:
            if not is_cancelled_exception(err):
                await calls.finish_subagent(
                    FinishSubagentInput(sandbox_id=sandbox.sandbox_id),
                    queue=input.prepared.host_queue,
                    branch=input.branch,
                )
            raise

    async def _work(self, input: SubagentInput, state: SubagentRun, sandbox: SandboxSpec) -> bool:
        """Step until the model finishes (True), gives up or a budget is spent (False)."""
        result = state.result
        first = True  # a run's first step starts the sandbox (idempotent if it runs)
        while True:
            limit = state.budget_spent(input.budget, workflow.now())
            if limit:
                result.state = SubagentState.BUDGET_EXHAUSTED
                result.error = f"budget spent: {limit}"
                return False
            state.pending.extend(
                ChatMessage(role="user", content=prompts.steering_message(g))
                for g in self._take_guidance()
            )
            step = await calls.subagent_step(
                StepInput(
                    turn=self._turn_input(input, state),
                    sandbox=sandbox,
                    base_commit=input.prepared.base_commit,
                    start_sandbox=first,
                ),
                queue=input.prepared.host_queue,
                number=result.steps + 1,
            )
            first = False
            for denied in step.denied:
                self._record_denied(input, denied)
            end = state.absorb(step)
            metrics.count(
                workflow.metric_meter(), metrics.SUBAGENT_STEPS, role=input.subtask.role.value
            )
            if end is StepEnd.GAVE_UP:
                return False
            if end is StepEnd.NUDGED:
                self._report(Report(STEP, "answered without a tool call"))
                continue
            tools = state.tools_used
            self._report(Report(STEP, describe_step(step.turn, tools), {"tools": tools}))
            if end is StepEnd.FINISHED:
                return True
            if self._history_full(input):
                await self._continue_as_new(input, state)

    async def _continue_as_new(self, input: SubagentInput, state: SubagentRun) -> None:
        self._send(self._batcher.release())
        await self._flush_reports()
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            input.model_copy(
                update={"resume": state.checkpoint(), "guidance": self._take_guidance()}
            )
        )

    @staticmethod
    def _turn_input(input: SubagentInput, state: SubagentRun) -> LlmTurnInput:
        transcript = f"{input.task_id}/{input.index}/r{input.round}"
        return LlmTurnInput(
            transcript_id=transcript,
            call_id=f"{transcript}/{state.result.steps}",
            role=input.subtask.role,
            expected_length=state.transcript_length,
            new_messages=state.pending,
            task_id=input.task_id,
            subagent=input.index,
        )

    def _record_denied(self, input: SubagentInput, denied: DeniedCall) -> None:
        assert self._result is not None
        self._result.denied_calls += 1
        metrics.count(
            workflow.metric_meter(),
            metrics.TOOL_CALLS_DENIED,
            role=input.subtask.role.value,
            reason=denied.reason.value,
        )
        self._report(
            Report(
                "denied",
                f"{denied.name}: {denied.message}",
                {"tool": denied.name, "reason": denied.reason.value},
            ),
        )

    @staticmethod
    def _history_full(input: SubagentInput) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= input.history_limit
        )

    def _take_guidance(self) -> list[str]:
        taken, self._guidance = self._guidance, []
        return taken

    # ---- reports to the parent task ---------------------------------------------------

    def _report(self, report: Report) -> None:
        """Tell the parent task, batched (see `_progress`), without waiting for it."""
        if workflow.info().parent is None or self._result is None:
            return
        self._send(self._batcher.offer(report, workflow.now()))

    def _send(self, reports: list[Report]) -> None:
        """Signal each report to the parent, chained so it receives them in order.

        Awaiting each signal would cost a workflow task round trip per step; instead
        the signal command leaves with the next activity's. `_flush_reports` waits
        for the last.
        """
        parent = workflow.info().parent
        if parent is None or self._result is None:
            return
        for report in reports:
            progress = Progress(
                index=self._result.index,
                kind=report.kind,
                message=report.message,
                steps=self._result.steps,
                tokens=self._result.tokens,
                tool_calls=self._result.tool_calls,
                denied_calls=self._result.denied_calls,
                data=dict(report.data),
            )
            self._last_report = asyncio.create_task(
                self._send_report(parent.workflow_id, progress, self._last_report)
            )

    @staticmethod
    async def _send_report(
        parent_id: str, progress: Progress, previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:
            await previous
        try:
            await workflow.get_external_workflow_handle(parent_id).signal(
                Signals.SUBAGENT_PROGRESS, progress
            )
        except Exception:  # the parent closed: nothing to tell
            workflow.logger.warning("could not report progress to %s", parent_id)

    async def _flush_reports(self) -> None:
        if self._last_report is not None:
            await self._last_report


def _commit_of(input: SubagentInput, state: SubagentRun) -> CommitInput | None:
    """What a worker commits at its end (other roles commit nothing)."""
    if input.subtask.role is not Role.WORKER:
        return None
    return CommitInput(
        worktree_path=state.worktree_path,
        base_commit=input.prepared.base_commit,
        message=f"{input.subtask.title}\n\nSwitchboard {input.task_id}, subagent "
        f"{input.index}, round {input.round}.\n\n{state.result.summary}".strip(),
    )
