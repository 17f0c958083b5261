"""One subagent: a model in a loop with tools, in its own worktree and sandbox.

Each model turn and each batch of tool calls is its own activity, so a crash
resumes at the last completed step and no finished model call is paid twice.
Tool calls are checked against the role in this (pure) workflow code before any
of them reaches the sandbox; a refused call is answered to the model as an error.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from switchboard import metrics, prompts
    from switchboard.contracts import (
        ChatMessage,
        CommitInput,
        CommitResult,
        FinishSubagentInput,
        FinishSubagentResult,
        LlmTurnInput,
        LlmTurnResult,
        Progress,
        RunToolsInput,
        RunToolsResult,
        SandboxInfo,
        SandboxSpec,
        StepInput,
        StepResult,
        SubagentCheckpoint,
        SubagentInput,
        SubagentResult,
        WorktreeInfo,
        WorktreeInput,
    )
    from switchboard.models import Role, SteerInput, SubagentState
    from switchboard.tools import CheckedCall, DeniedCall, ToolName, check_call
    from switchboard.wire import Activities, Queries, Signals, Workflows
    from workflows import _policy as policy


STOP_SANDBOX_PATCH = "stop-sandbox-after-commit"
"""Histories recorded before subagents stopped their sandbox replay without it."""

ONE_ACTIVITY_STEP_PATCH = "one-activity-step"
"""A step is one `subagent_step` activity (which starts the sandbox on the first
step), step reports are batched (at most one per `PROGRESS_INTERVAL`), and the start
and end are not signalled (the parent sees both from the child itself). Histories
from before ran `start_sandbox` and two activities per step, and reported all."""

PROGRESS_INTERVAL = timedelta(seconds=1)
"""Steps that end within this of the last report wait for the next one. A model turn
takes seconds, so real steps are reported one by one; fast ones (a scripted model)
are batched, each report a workflow task less for the parent and for this workflow."""


@workflow.defn(name=Workflows.SUBAGENT)
class SubagentWorkflow:
    def __init__(self) -> None:
        self._guidance: list[str] = []
        self._result: SubagentResult | None = None
        self._last_report: asyncio.Task[None] | None = None
        self._one_activity_steps = False
        self._last_sent: datetime | None = None
        self._held: list[tuple[str, list[dict[str, object]]]] = []

    @workflow.signal(name=Signals.STEER)
    def steer(self, steer: SteerInput) -> None:
        self._guidance.append(steer.guidance)

    @workflow.query(name=Queries.STATUS)
    def status(self) -> SubagentResult | None:
        return self._result

    @workflow.run
    async def run(self, input: SubagentInput) -> SubagentResult:
        self._guidance.extend(input.guidance)
        self._one_activity_steps = workflow.patched(ONE_ACTIVITY_STEP_PATCH)
        role = input.subtask.role
        result = SubagentResult(index=input.index, state=SubagentState.RUNNING, branch=input.branch)
        self._result = result
        host = input.prepared.host_queue

        if input.resume is None:
            worktree: WorktreeInfo = await workflow.execute_activity(
                Activities.CREATE_WORKTREE,
                WorktreeInput(
                    task_id=input.task_id,
                    index=input.index,
                    mirror_path=input.prepared.mirror_path,
                    base_commit=input.start_commit,
                    branch=input.branch,
                ),
                result_type=WorktreeInfo,
                task_queue=host,
                start_to_close_timeout=policy.WORKTREE_TIMEOUT,
                heartbeat_timeout=policy.LONG_HEARTBEAT_TIMEOUT,
                retry_policy=policy.TRANSIENT_RETRY,
                summary=f"worktree {input.branch}",
            )
            worktree_path = worktree.path
        else:
            worktree_path = input.resume.worktree_path
        sandbox = SandboxSpec(
            sandbox_id=f"{input.task_id}-{input.index}",
            worktree_path=worktree_path,
            role=role,
            mirror_path=input.prepared.mirror_path,
        )
        # One-activity steps start the sandbox in the run's first step instead.
        sandbox_pending = self._one_activity_steps
        if not sandbox_pending:
            await workflow.execute_activity(
                Activities.START_SANDBOX,
                sandbox,
                result_type=SandboxInfo,
                task_queue=host,
                start_to_close_timeout=policy.SANDBOX_START_TIMEOUT,
                heartbeat_timeout=policy.HEARTBEAT_TIMEOUT,
                retry_policy=policy.TRANSIENT_RETRY,
                summary=f"sandbox for {role.value}",
            )
        if input.resume is None:
            if not self._one_activity_steps:  # the parent announces the start itself
                self._report(input, "started", f"{role.value} started: {input.subtask.title}")
            if role is Role.REVIEWER:
                first_prompt = prompts.review_prompt(input.goal, input.review_titles)
            else:
                first_prompt = prompts.subtask_prompt(
                    input.goal, input.subtask, feedback=input.feedback, round_number=input.round
                )
            pending = [
                ChatMessage(role="system", content=prompts.SYSTEM_PROMPTS[role]),
                ChatMessage(role="user", content=first_prompt),
            ]
            transcript_length = 0
            started = workflow.now()
            nudged = False
            runs = 1
        else:
            result = input.resume.result
            self._result = result
            pending = list(input.resume.pending)
            transcript_length = input.resume.transcript_length
            started = input.resume.started_at
            nudged = input.resume.nudged
            runs = input.resume.runs + 1
        finished = False

        while not finished:
            limit = self._budget_spent(input, result, started)
            if limit:
                result.state = SubagentState.BUDGET_EXHAUSTED
                result.error = f"budget spent: {limit}"
                break
            pending.extend(
                ChatMessage(role="user", content=prompts.steering_message(g))
                for g in self._take_guidance()
            )
            turn_input = LlmTurnInput(
                transcript_id=f"{input.task_id}/{input.index}/r{input.round}",
                call_id=f"{input.task_id}/{input.index}/r{input.round}/{result.steps}",
                role=role,
                expected_length=transcript_length,
                new_messages=pending,
                task_id=input.task_id,
                subagent=input.index,
            )
            if self._one_activity_steps:
                step = await workflow.execute_activity(
                    Activities.SUBAGENT_STEP,
                    StepInput(
                        turn=turn_input,
                        sandbox=sandbox,
                        base_commit=input.prepared.base_commit,
                        start_sandbox=sandbox_pending,
                    ),
                    result_type=StepResult,
                    task_queue=host,
                    start_to_close_timeout=policy.STEP_TIMEOUT,
                    heartbeat_timeout=policy.HEARTBEAT_TIMEOUT,
                    retry_policy=policy.TRANSIENT_RETRY,
                    summary=f"step {result.steps + 1}",
                )
                sandbox_pending = False
                for denied in step.denied:
                    self._record_denied(input, result, denied)
            else:
                step = await self._two_activity_step(input, result, turn_input, sandbox)
            turn = step.turn
            transcript_length = turn.transcript_length
            result.steps += 1
            metrics.count(workflow.metric_meter(), metrics.SUBAGENT_STEPS, role=role.value)
            result.tokens += turn.usage.total_tokens
            pending = []

            if not turn.tool_calls:
                if nudged:
                    result.summary = turn.content or "finished without a summary"
                    break
                nudged = True
                pending.append(ChatMessage(role="user", content=prompts.NO_TOOL_CALL_NUDGE))
                self._report(input, "step", "answered without a tool call")
                continue

            answers = {d.call_id: f"error: {d.message}" for d in step.denied}
            if step.finish is not None:
                finished = True
                result.summary = str(step.finish.arguments.get("summary") or "")
                result.verdict = step.finish.arguments.get("verdict")
                answers[step.finish.call_id] = "finished"
            result.tool_calls += len(step.outcomes)
            for outcome in step.outcomes:
                answers[outcome.call_id] = outcome.output
            tools_used: list[dict[str, object]] = [
                {"tool": o.name, "ok": o.ok, "limit": o.limit} for o in step.outcomes
            ]
            pending.extend(
                ChatMessage(role="tool", tool_call_id=c.id, content=answers.get(c.id, ""))
                for c in turn.tool_calls
            )
            self._report(
                input,
                "step",
                _describe_step(turn, tools_used),
                {"tools": tools_used},
            )
            if not finished and self._history_full(input):
                self._release_held(input)
                await self._flush_reports()
                await workflow.wait_condition(workflow.all_handlers_finished)
                checkpoint = SubagentCheckpoint(
                    result=result,
                    worktree_path=worktree_path,
                    transcript_length=transcript_length,
                    pending=pending,
                    nudged=nudged,
                    started_at=started,
                    runs=runs,
                )
                workflow.continue_as_new(
                    input.model_copy(
                        update={"resume": checkpoint, "guidance": self._take_guidance()}
                    )
                )

        if finished:
            result.state = SubagentState.DONE
        commit_input = None
        if role is Role.WORKER:
            commit_input = CommitInput(
                worktree_path=worktree_path,
                base_commit=input.prepared.base_commit,
                message=f"{input.subtask.title}\n\nSwitchboard {input.task_id}, subagent "
                f"{input.index}, round {input.round}.\n\n{result.summary}".strip(),
            )
        if self._one_activity_steps:
            # Commit and stop the sandbox in one activity: a task parked at the approval
            # gate for days keeps no container running; a later round starts a fresh one.
            ended: FinishSubagentResult = await workflow.execute_activity(
                Activities.FINISH_SUBAGENT,
                FinishSubagentInput(sandbox_id=sandbox.sandbox_id, commit=commit_input),
                result_type=FinishSubagentResult,
                task_queue=host,
                start_to_close_timeout=policy.COMMIT_TIMEOUT,
                heartbeat_timeout=policy.HEARTBEAT_TIMEOUT,
                retry_policy=policy.TRANSIENT_RETRY,
                summary=f"commit {input.branch}, stop sandbox" if commit_input else "stop sandbox",
            )
            commit = ended.commit
        else:
            commit = await self._commit_then_stop(input, commit_input, sandbox)
        if commit is not None:
            result.head = commit.head
            result.diff_stat = commit.diff_stat
        if self._one_activity_steps:
            self._release_held(input)  # the parent reads the end from the result
        else:
            self._report(input, "finished", result.summary or result.state.value)
        await self._flush_reports()
        return result

    async def _commit_then_stop(
        self, input: SubagentInput, commit_input: CommitInput | None, sandbox: SandboxSpec
    ) -> CommitResult | None:
        """The ending as histories from before `ONE_ACTIVITY_STEP_PATCH` have it."""
        host = input.prepared.host_queue
        commit = None
        if commit_input is not None:
            commit = await workflow.execute_activity(
                Activities.COMMIT_WORKTREE,
                commit_input,
                result_type=CommitResult,
                task_queue=host,
                start_to_close_timeout=policy.COMMIT_TIMEOUT,
                heartbeat_timeout=policy.HEARTBEAT_TIMEOUT,
                retry_policy=policy.TRANSIENT_RETRY,
                summary=f"commit {input.branch}",
            )
        if workflow.patched(STOP_SANDBOX_PATCH):
            await workflow.execute_activity(
                Activities.STOP_SANDBOX,
                SandboxInfo(sandbox_id=sandbox.sandbox_id, backend=""),
                task_queue=host,
                start_to_close_timeout=policy.SANDBOX_START_TIMEOUT,
                retry_policy=policy.TRANSIENT_RETRY,
                summary="stop sandbox",
            )
        return commit

    async def _two_activity_step(
        self,
        input: SubagentInput,
        result: SubagentResult,
        turn_input: LlmTurnInput,
        sandbox: SandboxSpec,
    ) -> StepResult:
        """A step as histories recorded before `ONE_ACTIVITY_STEP_PATCH` have it.

        The model turn and the tools are separate activities, and the calls are
        checked here in between; kept so those histories replay command for command.
        """
        turn: LlmTurnResult = await workflow.execute_activity(
            Activities.LLM_TURN,
            turn_input,
            result_type=LlmTurnResult,
            task_queue=input.prepared.host_queue,
            start_to_close_timeout=policy.LLM_TURN_TIMEOUT,
            heartbeat_timeout=policy.HEARTBEAT_TIMEOUT,
            retry_policy=policy.TRANSIENT_RETRY,
            summary=f"model turn {result.steps + 1}",
        )
        step = StepResult(turn=turn)
        checked: list[CheckedCall] = []
        for call in turn.tool_calls:
            verdict = check_call(turn_input.role, call.id, call.name, call.arguments)
            if isinstance(verdict, DeniedCall):
                step.denied.append(verdict)
                self._record_denied(input, result, verdict)
            elif verdict.name is ToolName.FINISH:
                step.finish = verdict
            else:
                checked.append(verdict)
        if checked:
            ran: RunToolsResult = await workflow.execute_activity(
                Activities.RUN_TOOLS,
                RunToolsInput(
                    sandbox=sandbox, base_commit=input.prepared.base_commit, calls=checked
                ),
                result_type=RunToolsResult,
                task_queue=input.prepared.host_queue,
                start_to_close_timeout=policy.RUN_TOOLS_TIMEOUT,
                heartbeat_timeout=policy.LONG_HEARTBEAT_TIMEOUT,
                retry_policy=policy.TOOLS_RETRY,
                summary=", ".join(c.name.value for c in checked),
            )
            step.outcomes = ran.outcomes
        return step

    def _record_denied(
        self, input: SubagentInput, result: SubagentResult, denied: DeniedCall
    ) -> None:
        result.denied_calls += 1
        metrics.count(
            workflow.metric_meter(),
            metrics.TOOL_CALLS_DENIED,
            role=input.subtask.role.value,
            reason=denied.reason.value,
        )
        self._report(
            input,
            "denied",
            f"{denied.name}: {denied.message}",
            {"tool": denied.name, "reason": denied.reason.value},
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

    @staticmethod
    def _budget_spent(input: SubagentInput, result: SubagentResult, started: datetime) -> str:
        if result.steps >= input.budget.max_steps:
            return f"{input.budget.max_steps} steps"
        if result.tokens >= input.budget.max_tokens:
            return f"{input.budget.max_tokens} tokens"
        elapsed = (workflow.now() - started).total_seconds()
        if elapsed >= input.budget.max_wall_seconds:
            return f"{input.budget.max_wall_seconds} s of wall time"
        return ""

    def _report(
        self, input: SubagentInput, kind: str, message: str, data: dict[str, object] | None = None
    ) -> None:
        """Tell the parent task, without waiting for it.

        Awaiting each signal would cost a workflow task round trip per step; instead
        the signal command leaves with the next activity's, and reports are chained
        so the parent receives them in order. `_flush_reports` waits for the last.
        With one-activity steps, a step ending within `PROGRESS_INTERVAL` of the
        last report is held and goes out with the next report.
        """
        if workflow.info().parent is None or self._result is None:
            return
        data = dict(data or {})
        if self._one_activity_steps:
            now = workflow.now()
            if kind == "step":
                recent = self._last_sent is not None and now - self._last_sent < PROGRESS_INTERVAL
                if recent:
                    self._held.append((message, _tools_of(data)))
                    return
                if self._held:
                    self._held.append((message, _tools_of(data)))
                    message, data = self._take_held()
            else:
                self._release_held(input)
            self._last_sent = now
        self._signal_parent(input, kind, message, data)

    def _release_held(self, input: SubagentInput) -> None:
        """Send the held step reports now, as one."""
        if self._held:
            self._signal_parent(input, "step", *self._take_held())

    def _take_held(self) -> tuple[str, dict[str, object]]:
        held, self._held = self._held, []
        if len(held) == 1:
            return held[0][0], {"tools": held[0][1]}
        tools = [used for _, step_tools in held for used in step_tools]
        message = f"{len(held)} steps: " + "; ".join(message for message, _ in held)
        return message, {"tools": tools, "batched_steps": len(held)}

    def _signal_parent(
        self, input: SubagentInput, kind: str, message: str, data: dict[str, object]
    ) -> None:
        parent = workflow.info().parent
        assert parent is not None and self._result is not None
        progress = Progress(
            index=input.index,
            kind=kind,
            message=message,
            steps=self._result.steps,
            tokens=self._result.tokens,
            tool_calls=self._result.tool_calls,
            denied_calls=self._result.denied_calls,
            data=data,
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


def _tools_of(data: dict[str, object]) -> list[dict[str, object]]:
    tools = data.get("tools")
    return list(tools) if isinstance(tools, list) else []


def _describe_step(turn: LlmTurnResult, tools_used: list[dict[str, object]]) -> str:
    if not tools_used:
        names = ", ".join(c.name for c in turn.tool_calls) or "no tools"
        return f"called {names}"
    parts = []
    for used in tools_used:
        mark = "ok" if used["ok"] else f"failed ({used['limit'] or 'error'})"
        parts.append(f"{used['tool']} {mark}")
    return ", ".join(parts)
