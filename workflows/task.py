"""`DelegatedTaskWorkflow`: one durable workflow per delegated task.

prepare repo -> plan -> fan out subagents (at most `max_parallel` at once) ->
integrate their branches -> review -> wait for a human (days if need be) ->
merge, or loop with the human's feedback, or stop. Worktrees and sandboxes are
removed on every ending. Nobody waits on this workflow: the conversation reads
its `status` and `events` queries and talks to it with updates and signals.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from switchboard import metrics
    from switchboard.contracts import (
        CleanupInput,
        IntegrateInput,
        MergeOutcome,
        Plan,
        PlanInput,
        PreparedRepo,
        PrepareRepoInput,
        Progress,
        SubagentInput,
        SubagentResult,
    )
    from switchboard.models import (
        ApprovalRecord,
        ApproveInput,
        DiffLocation,
        DiffRequest,
        DiffStat,
        EventKind,
        EventsPage,
        EventsRequest,
        MergeResult,
        Phase,
        RejectInput,
        RequestChangesInput,
        ReviewVerdict,
        Role,
        SteerInput,
        SubagentState,
        SubagentStatus,
        SubtaskSpec,
        TaskRequest,
        TaskResult,
        TaskStatus,
    )
    from switchboard.wire import (
        Activities,
        Errors,
        Queries,
        SearchAttributes,
        Signals,
        Updates,
        Workflows,
        subagent_branch,
        task_branch,
    )
    from workflows import _policy as policy
    from workflows._events import EventLog
    from workflows.subagent import SubagentWorkflow

REVIEW_INDEX_BASE = 1000
"""Reviewer runs are numbered 1000 + round so their worktrees never collide with workers'."""

Decision = Literal["approved", "changes_requested", "rejected"]


@workflow.defn(name=Workflows.TASK)
class DelegatedTaskWorkflow:
    @workflow.init
    def __init__(self, request: TaskRequest) -> None:
        info = workflow.info()
        self._task_id = info.workflow_id
        self._request = request
        self._events = EventLog()
        self._prepared: PreparedRepo | None = None
        self._subtasks: list[SubtaskSpec] = []
        self._integration: MergeResult | None = None
        self._decision: ApprovalRecord | None = None
        self._feedback: str | None = None
        self._guidance: list[str] = []
        self._running: dict[int, str] = {}
        self._announced: set[str] = set()
        """`<index>/r<round>` of each child whose start is in the event log."""
        now = workflow.now()
        self._status = TaskStatus(
            task_id=self._task_id,
            goal=request.goal,
            repo=request.repo,
            owner=request.owner,
            phase=Phase.PREPARING,
            created_at=now,
            updated_at=now,
        )

    # ---- the business process -------------------------------------------------------

    @workflow.run
    async def run(self, request: TaskRequest) -> TaskResult:
        workflow.upsert_search_attributes(
            [
                SearchAttributes.OWNER.value_set(request.owner),
                SearchAttributes.REPO.value_set(request.repo[:250]),
                SearchAttributes.PHASE.value_set(Phase.PREPARING.value),
            ]
        )
        self._emit(EventKind.PHASE, f"task accepted: {request.goal[:200]}")
        try:
            await self._deliver(request)
        except asyncio.CancelledError:
            self._set_phase(Phase.CANCELLED, "task cancelled")
            self._emit(EventKind.CANCELLED, "task cancelled; worktrees and sandboxes removed")
            await self._cleanup(delete_branches=True)
            raise
        except (ActivityError, ChildWorkflowError, ApplicationError) as err:
            message = failure_message(err)
            self._status.error = message
            self._set_phase(Phase.FAILED, f"task failed: {message}")
            self._emit(EventKind.FAILED, message)
            await self._cleanup(delete_branches=False)
            raise ApplicationError(message, type=Errors.TASK_FAILED, non_retryable=True) from err
        await workflow.wait_condition(workflow.all_handlers_finished)
        return TaskResult(
            task_id=self._task_id,
            phase=self._status.phase,
            merge=self._status.merge,
            error=self._status.error,
            subagents=self._status.subagents,
        )

    async def _deliver(self, request: TaskRequest) -> None:
        self._prepared = await workflow.execute_activity(
            Activities.PREPARE_REPO,
            PrepareRepoInput(repo=request.repo, base_ref=request.base_ref),
            result_type=PreparedRepo,
            start_to_close_timeout=policy.PREPARE_REPO_TIMEOUT,
            heartbeat_timeout=policy.LONG_HEARTBEAT_TIMEOUT,
            retry_policy=policy.TRANSIENT_RETRY,
            summary=f"mirror {request.repo}",
        )
        self._set_phase(Phase.PLANNING, f"repository ready at {self._prepared.base_commit[:12]}")
        if request.subtasks:
            self._subtasks = list(request.subtasks)
        else:
            plan: Plan = await workflow.execute_activity(
                Activities.PLAN_SUBTASKS,
                PlanInput(
                    task_id=self._task_id,
                    goal=request.goal,
                    repo=request.repo,
                    max_subtasks=request.max_parallel,
                ),
                result_type=Plan,
                start_to_close_timeout=policy.PLAN_TIMEOUT,
                heartbeat_timeout=policy.HEARTBEAT_TIMEOUT,
                retry_policy=policy.PLAN_RETRY,
                summary="plan subtasks",
            )
            self._subtasks = plan.subtasks
        self._status.subagents = [
            SubagentStatus(
                index=i, title=s.title, role=s.role, branch=subagent_branch(self._task_id, i)
            )
            for i, s in enumerate(self._subtasks, start=1)
        ]
        self._emit(
            EventKind.PLAN,
            f"{len(self._subtasks)} subtasks: " + "; ".join(s.title for s in self._subtasks),
            data={"subtasks": [s.model_dump(mode="json") for s in self._subtasks]},
        )

        while True:
            self._set_phase(Phase.RUNNING, f"round {self._status.round}: subagents at work")
            results = await self._run_subagents()
            if all(r.state is SubagentState.FAILED for r in results):
                errors = "; ".join(f"#{r.index}: {r.error}" for r in results)
                raise ApplicationError(f"every subagent failed: {errors}", non_retryable=True)
            await self._integrate()
            if request.review and self._integration and self._integration.merged:
                await self._review()
            decision = await self._await_approval()
            if decision.decision == "approved":
                await self._merge()
                await self._cleanup(delete_branches=False)
                return
            if decision.decision == "rejected":
                self._set_phase(Phase.REJECTED, f"rejected by {decision.by}")
                await self._cleanup(delete_branches=True)
                return
            self._feedback = decision.comment
            self._status.round += 1

    async def _run_subagents(self) -> list[SubagentResult]:
        assert self._prepared is not None
        prepared = self._prepared
        gate = asyncio.Semaphore(self._request.max_parallel)
        round_number = self._status.round
        rerun_all = round_number == 1 or not any(s.role is Role.WORKER for s in self._subtasks)

        async def one(index: int, spec: SubtaskSpec) -> SubagentResult:
            status = self._status.subagents[index - 1]
            branch = subagent_branch(self._task_id, index)
            if not rerun_all and spec.role is not Role.WORKER:
                return SubagentResult(index=index, state=status.state, branch=branch)
            async with gate:
                child_id = f"{self._task_id}-sub{index}-r{round_number}"
                self._running[index] = child_id
                status.state = SubagentState.RUNNING
                status.round = round_number
                status.started_at = workflow.now()
                try:
                    result = await self._run_child(
                        child_id,
                        f"{spec.role.value}: {spec.title}",
                        self._subagent_input(
                            index,
                            spec,
                            branch=branch,
                            start_commit=prepared.base_commit,
                            feedback=self._feedback,
                            guidance=list(self._guidance),
                        ),
                    )
                finally:
                    self._running.pop(index, None)
            self._record_result(status, result)
            return result

        return list(
            await asyncio.gather(*(one(i, s) for i, s in enumerate(self._subtasks, start=1)))
        )

    def _subagent_input(
        self,
        index: int,
        spec: SubtaskSpec,
        *,
        branch: str,
        start_commit: str,
        feedback: str | None = None,
        guidance: list[str] | None = None,
        review_titles: list[str] | None = None,
    ) -> SubagentInput:
        assert self._prepared is not None
        return SubagentInput(
            task_id=self._task_id,
            index=index,
            round=self._status.round,
            goal=self._request.goal,
            subtask=spec,
            prepared=self._prepared,
            branch=branch,
            start_commit=start_commit,
            budget=self._request.budget,
            feedback=feedback,
            guidance=guidance or [],
            review_titles=review_titles or [],
        )

    async def _run_child(self, child_id: str, summary: str, input: SubagentInput) -> SubagentResult:
        """Run one subagent; its failure is a result (the others carry on), not an exception.

        Its start is announced here, when Temporal confirms it, rather than by a signal
        from the child (which costs both workflows a workflow task).
        """
        try:
            handle = await workflow.start_child_workflow(
                SubagentWorkflow.run,
                input,
                id=child_id,
                task_queue=input.prepared.host_queue,
                static_summary=summary[:200],
            )
            self._announce_start(input)
            result: SubagentResult = await handle
        except ChildWorkflowError as err:
            result = SubagentResult(
                index=input.index,
                state=SubagentState.FAILED,
                branch=input.branch,
                error=failure_message(err),
            )
        return result

    def _announce_start(self, input: SubagentInput) -> None:
        key = _start_key(input.index, input.round)
        if key in self._announced:
            return
        self._announced.add(key)
        message = f"{input.subtask.role.value} started: {input.subtask.title}"
        if input.index >= REVIEW_INDEX_BASE:
            self._emit(EventKind.REVIEW, f"reviewer: {message}")
        else:
            self._emit(
                EventKind.SUBAGENT_STARTED, f"#{input.index} {message}", subagent=input.index
            )

    def _record_result(self, status: SubagentStatus, result: SubagentResult) -> None:
        status.state = result.state
        status.steps = max(status.steps, result.steps)
        status.tokens = max(status.tokens, result.tokens)
        status.tool_calls = max(status.tool_calls, result.tool_calls)
        status.denied_calls = max(status.denied_calls, result.denied_calls)
        status.summary = result.summary
        status.error = result.error
        if result.diff_stat is not None:
            status.diff_stat = result.diff_stat
        status.finished_at = workflow.now()
        self._emit(
            EventKind.SUBAGENT_FINISHED,
            f"#{status.index} {status.title}: {result.state.value}"
            + (f" — {result.error}" if result.error else ""),
            subagent=status.index,
            data={
                "state": result.state.value,
                "summary": result.summary[:2000],
                "diff_stat": result.diff_stat.model_dump() if result.diff_stat else None,
            },
        )

    def _worker_branches(self) -> list[str]:
        return [
            s.branch
            for s in self._status.subagents
            if s.role is Role.WORKER and s.state is not SubagentState.FAILED
        ]

    async def _integrate(self, *, publish: bool = False) -> MergeResult:
        assert self._prepared is not None
        outcome: MergeOutcome = await workflow.execute_activity(
            Activities.INTEGRATE_BRANCHES,
            IntegrateInput(
                task_id=self._task_id,
                repo=self._request.repo,
                mirror_path=self._prepared.mirror_path,
                base_commit=self._prepared.base_commit,
                branches=self._worker_branches(),
                integration_branch=f"{task_branch(self._task_id)}/merged",
                target_branch=task_branch(self._task_id),
                is_local=self._prepared.is_local,
                publish=publish,
                push=self._request.push,
            ),
            result_type=MergeOutcome,
            task_queue=self._prepared.host_queue,
            start_to_close_timeout=policy.INTEGRATE_TIMEOUT,
            heartbeat_timeout=policy.LONG_HEARTBEAT_TIMEOUT,
            retry_policy=policy.TRANSIENT_RETRY,
            summary="merge subagent branches" + (" and publish" if publish else ""),
        )
        self._integration = outcome.result
        self._status.diff_stat = outcome.stat
        if outcome.result.merged:
            if not publish:
                self._emit(
                    EventKind.DIFF_READY,
                    f"combined diff: {outcome.stat.files_changed} files, "
                    f"+{outcome.stat.insertions} -{outcome.stat.deletions}",
                    data={"diff_stat": outcome.stat.model_dump()},
                )
        else:
            self._status.merge = outcome.result
            self._emit(
                EventKind.MERGE_CONFLICT,
                outcome.result.message
                or "subagent branches conflict in " + ", ".join(outcome.result.conflicts),
                data={"conflicts": outcome.result.conflicts},
            )
        return outcome.result

    async def _review(self) -> None:
        assert self._prepared is not None and self._integration is not None
        self._set_phase(Phase.REVIEWING, "reviewer reading the combined diff")
        round_number = self._status.round
        result = await self._run_child(
            f"{self._task_id}-review-r{round_number}",
            "reviewer",
            self._subagent_input(
                REVIEW_INDEX_BASE + round_number,
                SubtaskSpec(title="Review the combined change", role=Role.REVIEWER),
                branch=f"{task_branch(self._task_id)}/review-r{round_number}",
                start_commit=self._integration.commit or self._prepared.base_commit,
                review_titles=[s.title for s in self._subtasks],
            ),
        )
        if result.state is SubagentState.FAILED:
            self._emit(EventKind.REVIEW, f"review failed: {result.error}")
            return
        verdict = "approve" if result.verdict == "approve" else "request_changes"
        self._status.review = ReviewVerdict(verdict=verdict, comments=result.summary)
        self._emit(
            EventKind.REVIEW,
            f"reviewer says {verdict}: {result.summary[:500]}",
            data={"verdict": verdict, "comments": result.summary[:5000]},
        )

    async def _await_approval(self) -> ApprovalRecord:
        self._decision = None
        self._set_phase(Phase.AWAITING_APPROVAL, "waiting for a human decision")
        self._emit(
            EventKind.APPROVAL_NEEDED,
            "approve, request changes or reject"
            + (" (the branches conflict: approval is refused)" if self._conflicted() else ""),
            data={
                "diff_stat": self._status.diff_stat.model_dump()
                if self._status.diff_stat
                else None,
                "review": self._status.review.model_dump() if self._status.review else None,
            },
        )
        waiting_since = workflow.now()
        await workflow.wait_condition(lambda: self._decision is not None)
        assert self._decision is not None
        metrics.observe(
            workflow.metric_meter(),
            metrics.APPROVAL_WAIT,
            (workflow.now() - waiting_since).total_seconds(),
            decision=self._decision.decision,
        )
        return self._decision

    async def _merge(self) -> None:
        self._set_phase(Phase.MERGING, "merging the subagent branches")
        result = await self._integrate(publish=True)
        self._status.merge = result
        if result.merged:
            if result.branch != task_branch(self._task_id):
                # Publishing to the user's repo failed (e.g. that branch is checked out there).
                self._emit(EventKind.MERGED, f"merged, but not published: {result.message}")
            self._emit(
                EventKind.MERGED,
                f"merged into {result.branch} at {(result.commit or '')[:12]}"
                + (" and pushed" if result.pushed else ""),
                data=result.model_dump(),
            )
            self._set_phase(Phase.COMPLETED, "task completed")
            self._emit(EventKind.COMPLETED, f"done: branch {result.branch}")
        else:
            raise ApplicationError(
                "merge conflict in " + ", ".join(result.conflicts), non_retryable=True
            )

    async def _cleanup(self, *, delete_branches: bool) -> None:
        if self._prepared is None:
            return  # nothing was created on any host before the repository was ready
        await workflow.execute_activity(
            Activities.CLEANUP_TASK,
            CleanupInput(
                task_id=self._task_id,
                mirror_path=self._prepared.mirror_path,
                delete_branches=delete_branches,
            ),
            task_queue=self._prepared.host_queue,
            start_to_close_timeout=policy.CLEANUP_TIMEOUT,
            retry_policy=policy.TRANSIENT_RETRY,
            summary="remove worktrees and sandboxes",
        )

    # ---- bookkeeping ------------------------------------------------------------------

    def _set_phase(self, phase: Phase, message: str) -> None:
        if phase.is_final:
            metrics.count(workflow.metric_meter(), metrics.TASKS, outcome=phase.value)
        self._status.phase = phase
        self._status.updated_at = workflow.now()
        workflow.upsert_search_attributes([SearchAttributes.PHASE.value_set(phase.value)])
        workflow.set_current_details(f"**{phase.value}** — {message}")
        self._emit(EventKind.PHASE, message, data={"phase": phase.value})

    def _emit(
        self,
        kind: EventKind,
        message: str,
        *,
        subagent: int | None = None,
        data: dict[str, object] | None = None,
    ) -> None:
        self._events.append(
            kind,
            message,
            at=workflow.now(),
            phase=self._status.phase,
            subagent=subagent,
            data=dict(data or {}),
        )
        self._status.next_offset = self._events.next_offset

    def _conflicted(self) -> bool:
        return self._integration is not None and not self._integration.merged

    # ---- handlers ---------------------------------------------------------------------

    @workflow.query(name=Queries.STATUS)
    def status(self) -> TaskStatus:
        return self._status

    @workflow.query(name=Queries.EVENTS)
    def events(self, request: EventsRequest) -> EventsPage:
        return self._events.page(
            request.from_offset, request.limit, final=self._status.phase.is_final
        )

    @workflow.query(name=Queries.DIFF)
    def diff(self, request: DiffRequest) -> DiffLocation:
        location = DiffLocation(task_id=self._task_id, subagent=request.subagent)
        if self._prepared is None:
            return location
        location.mirror_path = self._prepared.mirror_path
        location.base_commit = self._prepared.base_commit
        if request.subagent is not None:
            if 1 <= request.subagent <= len(self._status.subagents):
                location.ref = self._status.subagents[request.subagent - 1].branch
        elif self._integration is not None and self._integration.merged:
            location.ref = self._integration.commit
        return location

    @workflow.signal(name=Signals.SUBAGENT_PROGRESS)
    def subagent_progress(self, progress: Progress) -> None:
        if progress.kind == "started":
            # Children from before ONE_ACTIVITY_STEP_PATCH still announce themselves.
            round_number = (
                progress.index - REVIEW_INDEX_BASE
                if progress.index >= REVIEW_INDEX_BASE
                else self._status.round
            )
            if _start_key(progress.index, round_number) in self._announced:
                return
        if progress.index >= REVIEW_INDEX_BASE:
            if progress.kind == "finished":
                return  # the verdict event follows from the child's result
            self._emit(EventKind.REVIEW, f"reviewer: {progress.message}", data=progress.data)
            return
        if not 1 <= progress.index <= len(self._status.subagents):
            return
        status = self._status.subagents[progress.index - 1]
        status.steps = progress.steps
        status.tokens = progress.tokens
        status.tool_calls = progress.tool_calls
        status.denied_calls = progress.denied_calls
        kind = {
            "started": EventKind.SUBAGENT_STARTED,
            "denied": EventKind.TOOL_DENIED,
        }.get(progress.kind, EventKind.SUBAGENT_STEP)
        if progress.kind == "finished":
            return  # the child's result is the authoritative end (see _record_result)
        self._emit(
            kind,
            f"#{progress.index} {progress.message}",
            subagent=progress.index,
            data={**progress.data, "steps": progress.steps, "tokens": progress.tokens},
        )

    @workflow.signal(name=Signals.STEER)
    async def steer(self, steer: SteerInput) -> None:
        self._guidance.append(steer.guidance)
        self._emit(
            EventKind.STEERED,
            f"{steer.by} steered: {steer.guidance[:500]}",
            data={"by": steer.by, "running": sorted(self._running)},
        )
        for child_id in list(self._running.values()):
            await workflow.get_external_workflow_handle(child_id).signal(Signals.STEER, steer)

    @workflow.update(name=Updates.APPROVE)
    def approve(self, decision: ApproveInput) -> ApprovalRecord:
        return self._decide("approved", decision.by, decision.comment)

    @approve.validator
    def _check_approve(self, decision: ApproveInput) -> None:
        self._require_awaiting()
        if self._conflicted():
            assert self._integration is not None
            raise ApplicationError(
                "cannot approve: the subagent branches conflict in "
                + ", ".join(self._integration.conflicts)
                + "; request changes or reject",
                type=Errors.WRONG_PHASE,
            )

    @workflow.update(name=Updates.REQUEST_CHANGES)
    def request_changes(self, decision: RequestChangesInput) -> ApprovalRecord:
        return self._decide("changes_requested", decision.by, decision.feedback)

    @request_changes.validator
    def _check_request_changes(self, decision: RequestChangesInput) -> None:
        self._require_awaiting()
        if not decision.feedback.strip():
            raise ApplicationError("feedback must say what to change", type=Errors.INVALID_INPUT)

    @workflow.update(name=Updates.REJECT)
    def reject(self, decision: RejectInput) -> ApprovalRecord:
        return self._decide("rejected", decision.by, decision.comment)

    @reject.validator
    def _check_reject(self, decision: RejectInput) -> None:
        self._require_awaiting()

    def _require_awaiting(self) -> None:
        if self._status.phase is not Phase.AWAITING_APPROVAL or self._decision is not None:
            raise ApplicationError(
                f"task {self._task_id} is {self._status.phase.value}, not awaiting approval",
                type=Errors.WRONG_PHASE,
            )

    def _decide(self, decision: Decision, by: str, comment: str) -> ApprovalRecord:
        record = ApprovalRecord(
            decision=decision, by=by, at=workflow.now(), comment=comment, round=self._status.round
        )
        self._decision = record
        self._status.approvals.append(record)
        kind = {
            "approved": EventKind.APPROVED,
            "changes_requested": EventKind.CHANGES_REQUESTED,
            "rejected": EventKind.REJECTED,
        }[decision]
        self._emit(
            kind,
            f"{decision.replace('_', ' ')} by {by}" + (f": {comment[:500]}" if comment else ""),
            data=record.model_dump(mode="json"),
        )
        return record


def _dump(model: ReviewVerdict | DiffStat | None) -> dict[str, object] | None:
    return model.model_dump(mode="json") if model is not None else None


def failure_message(err: BaseException) -> str:
    """The innermost, most specific message of a Temporal failure chain."""
    message = str(err)
    current: BaseException | None = err
    while current is not None:
        if isinstance(current, ApplicationError) and str(current):
            message = str(current)
        current = current.__cause__
    return message


def _start_key(index: int, round_number: int) -> str:
    """How `_announced` names a child run: `<index>/r<round>`."""
    return f"{index}/r{round_number}"
