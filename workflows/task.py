"""`DelegatedTaskWorkflow`: one durable workflow per delegated task.

prepare repo -> plan -> fan out subagents (at most `max_parallel` at once) -> integrate
-> review -> wait for a human -> merge, or loop with feedback, or stop. Worktrees and
sandboxes are removed on every ending; a cancel always ends it as cancelled.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from switchboard import metrics
    from switchboard.audit import AuditAction, claim
    from switchboard.contracts import (
        CleanupInput,
        IntegrateInput,
        PlanInput,
        PreparedRepo,
        PrepareRepoInput,
        Progress,
        SubagentInput,
        SubagentResult,
    )
    from switchboard.identity import Identity
    from switchboard.models import (
        ApprovalRecord,
        DiffLocation,
        DiffRequest,
        EventKind,
        EventsPage,
        EventsRequest,
        MergeResult,
        Phase,
        Role,
        SubagentState,
        SubtaskSpec,
        TaskRequest,
        TaskResult,
        TaskStatus,
    )
    from switchboard.repo_refs import redact_repo
    from switchboard.wire import (
        Errors,
        Queries,
        SearchAttributes,
        Signals,
        Workflows,
        subagent_branch,
        task_branch,
    )
    from workflows import _calls as calls
    from workflows import _target as target
    from workflows._child import run_child
    from workflows._gate import GateHandlers
    from workflows._status import REVIEW_INDEX_BASE, TaskBook, failure_message
    from workflows._target import TargetTracker
    from workflows._usage import Usage, phase_attributes


@workflow.defn(name=Workflows.TASK)
class DelegatedTaskWorkflow(GateHandlers):
    @workflow.init
    def __init__(self, request: TaskRequest) -> None:
        info = workflow.info()
        self._task_id = info.workflow_id
        self._request = request
        self._prepared: PreparedRepo | None = None
        self._subtasks: list[SubtaskSpec] = []
        self._integration: MergeResult | None = None
        self._feedback: str | None = None
        self._guidance: list[str] = []
        self._steer_ids: set[str] = set()
        self._running: dict[int, str] = {}
        self._only_failed = False
        self._rebase_asked = False
        self._cancel_actor: Identity | None = None
        self._book = TaskBook.new(self._task_id, request, workflow.now())
        self._status = self._book.status
        self._target = TargetTracker(request, self._book)
        self._usage = Usage()

    # ---- the business process -------------------------------------------------------

    @workflow.run
    async def run(self, request: TaskRequest) -> TaskResult:
        workflow.upsert_search_attributes(
            [
                SearchAttributes.OWNER.value_set(request.owner),
                SearchAttributes.REPO.value_set(redact_repo(request.repo)[:250]),
                SearchAttributes.PHASE.value_set(Phase.PREPARING.value),
            ]
        )
        now, submitter = workflow.now(), request.policy.submitter if request.policy else None
        submitted = claim(AuditAction.SUBMITTED, submitter, now, request.goal) if submitter else {}
        self._book.emit(
            EventKind.PHASE, f"task accepted: {request.goal[:200]}", now, data=submitted
        )
        try:
            await self._deliver(request)
        except asyncio.CancelledError:
            await self._cancelled()
            raise
        except (ActivityError, ChildWorkflowError, ApplicationError) as err:
            if is_cancelled_exception(err):  # an activity or child cancelled with the task
                await self._cancelled()
                raise asyncio.CancelledError from err
            message = failure_message(err)
            self._status.error = message
            self._set_phase(Phase.FAILED, f"task failed: {message}")
            self._book.emit(EventKind.FAILED, message, workflow.now())
            await self._cleanup(delete_branches=False)
            raise ApplicationError(message, type=Errors.TASK_FAILED, non_retryable=True) from err
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._book.result()

    async def _cancelled(self) -> None:
        """End as cancelled, whatever phase the cancel found; say what was published."""
        self._set_phase(Phase.CANCELLED, "task cancelled")
        now = workflow.now()
        self._book.record_cancel(now, audit=claim(AuditAction.CANCELLED, self._cancel_actor, now))
        await self._cleanup(delete_branches=True)

    async def _deliver(self, request: TaskRequest) -> None:
        fields = request.model_dump(include={"repo", "base_ref", "credential_ref"})
        prepare = PrepareRepoInput(**fields, task_id=self._task_id)
        self._prepared = await calls.prepare_repo(prepare)
        self._set_phase(Phase.PLANNING, f"repository ready at {self._prepared.base_commit[:12]}")
        if request.subtasks:
            self._subtasks = list(request.subtasks)
        else:
            asked = request.model_dump(include={"goal", "repo"})
            planning = PlanInput(**asked, task_id=self._task_id, max_subtasks=request.max_parallel)
            self._subtasks = (await calls.plan_subtasks(planning)).subtasks
        self._book.record_plan(self._subtasks, workflow.now())
        work: bool | None = True  # True: a worker round; False: a rebase round; None: neither
        while True:
            if work:
                self._set_phase(Phase.RUNNING, f"round {self._status.round}: subagents at work")
                await self._run_subagents()
                self._book.judge_round()
                if not request.review:  # the gate follows the integration: check beside it
                    self._target.begin(self._prepared)
                await self._integrate()
            fresh = work or (work is False and await self._rebase_round())
            if fresh and request.review and self._integration and self._integration.merged:
                await self._review()
            decision = await self._await_approval()
            if decision.decision == "approved":
                if await self._merge():
                    await self._cleanup(delete_branches=False)
                    return
                work = None  # the target moved into a conflict: decide again
                continue
            if decision.decision == "rejected":
                self._set_phase(Phase.REJECTED, f"rejected by {decision.by}")
                await self._cleanup(delete_branches=True)
                return
            work = not self._rebase_asked
            self._feedback = decision.comment or self._feedback
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
            if not rerun_all and (
                spec.role is not Role.WORKER
                or (self._only_failed and status.state is not SubagentState.FAILED)
            ):
                return SubagentResult(index=index, state=status.state, branch=branch)
            async with gate:
                child_id = f"{self._task_id}-sub{index}-r{round_number}"
                self._running[index] = child_id
                retried = status.state is SubagentState.FAILED  # rebuilt from its branch
                status.state = SubagentState.RUNNING
                status.round = round_number
                status.started_at = workflow.now()
                try:
                    result = await run_child(
                        self._book,
                        child_id,
                        f"{spec.role.value}: {spec.title}",
                        self._subagent_input(
                            index,
                            spec,
                            branch=branch,
                            start_commit=prepared.base_commit,
                            feedback=self._feedback,
                            guidance=list(self._guidance),
                            fresh=retried,
                        ),
                    )
                finally:
                    self._running.pop(index, None)
            self._book.record_result(status, result, workflow.now())
            self._usage.add(result)
            return result

        return list(
            await asyncio.gather(*(one(i, s) for i, s in enumerate(self._subtasks, start=1)))
        )

    def _subagent_input(self, index: int, spec: SubtaskSpec, **fields: Any) -> SubagentInput:
        assert self._prepared is not None
        return SubagentInput(
            task_id=self._task_id,
            index=index,
            round=self._status.round,
            goal=self._request.goal,
            subtask=spec,
            prepared=self._prepared,
            budget=self._request.budget,
            **fields,
        )

    async def _integrate(self, *, publish: bool = False) -> MergeResult:
        assert self._prepared is not None
        outcome = await calls.integrate_branches(
            IntegrateInput(
                task_id=self._task_id,
                repo=self._request.repo,
                mirror_path=self._prepared.mirror_path,
                base_commit=self._target.base(self._prepared),
                branches=self._book.worker_branches(),
                integration_branch=f"{task_branch(self._task_id)}/merged",
                target_branch=task_branch(self._task_id),
                is_local=self._prepared.is_local,
                publish=publish,
                push=self._request.push,
                credential_ref=self._request.credential_ref,
            ),
            queue=self._prepared.host_queue,
        )
        self._integration = outcome.result
        self._book.record_integration(outcome, workflow.now(), publish=publish)
        return outcome.result

    async def _review(self) -> None:
        assert self._prepared is not None and self._integration is not None
        self._set_phase(Phase.REVIEWING, "reviewer reading the combined diff")
        round_number = self._status.round
        result = await run_child(
            self._book,
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
        self._book.record_review(result, workflow.now())
        self._usage.add(result)

    async def _rebase_round(self) -> bool:
        assert self._prepared is not None
        self._set_phase(Phase.RUNNING, f"round {self._status.round}: rebasing onto the target")
        return await self._target.rebase(self._prepared, self._integration, self._integrate)

    async def _await_approval(self) -> ApprovalRecord:
        self._book.decision = None
        await self._target.check(self._prepared, self._integration, target.GATE)
        self._set_phase(Phase.AWAITING_APPROVAL, "waiting for a human decision")
        self._book.ask_for_approval(
            workflow.now(), conflicted=bool(self._integration and not self._integration.merged)
        )
        waiting_since = workflow.now()
        await workflow.wait_condition(lambda: self._book.decision is not None)
        decision = self._book.decision
        assert decision is not None
        metrics.observe(
            workflow.metric_meter(),
            metrics.APPROVAL_WAIT,
            (workflow.now() - waiting_since).total_seconds(),
            decision=decision.decision,
        )
        return decision

    async def _merge(self) -> bool:
        """Publish the change; False (nothing published) when the target moved into a
        conflict since the approval: the human decides again."""
        self._set_phase(Phase.MERGING, "merging the subagent branches")
        if await self._target.stops_merge(self._prepared, self._integration):
            return False
        # Shielded: a cancel mid-merge waits, so the task can say truly if it published.
        merging = asyncio.ensure_future(self._integrate(publish=True))
        try:
            result = await asyncio.shield(merging)
        except asyncio.CancelledError:
            self._book.note_published(await merging)
            raise
        self._book.note_published(result)
        self._status.merge = result
        if result.merged:
            self._book.record_merge(result, workflow.now())
            self._set_phase(Phase.COMPLETED, "task completed")
            self._book.emit(EventKind.COMPLETED, f"done: branch {result.branch}", workflow.now())
            return True
        else:
            raise ApplicationError(
                "merge conflict in " + ", ".join(result.conflicts), non_retryable=True
            )

    async def _cleanup(self, *, delete_branches: bool) -> None:
        if self._prepared is None:
            return  # nothing was created on any host before the repository was ready
        await calls.cleanup_task(
            CleanupInput(
                task_id=self._task_id,
                mirror_path=self._prepared.mirror_path,
                delete_branches=delete_branches,
            ),
            queue=self._prepared.host_queue,
        )

    def _set_phase(self, phase: Phase, message: str) -> None:
        if phase.is_final:
            metrics.count(workflow.metric_meter(), metrics.TASKS, outcome=phase.value)
        self._book.set_phase(phase, message, workflow.now())
        workflow.upsert_search_attributes(phase_attributes(phase, self._usage.tokens))
        workflow.set_current_details(f"**{phase.value}** — {message}")

    # ---- handlers ---------------------------------------------------------------------

    @workflow.query(name=Queries.STATUS)
    def status(self) -> TaskStatus:
        return self._status

    @workflow.query(name=Queries.EVENTS)
    def events(self, request: EventsRequest) -> EventsPage:
        return self._book.page(request.from_offset, request.limit)

    @workflow.query(name=Queries.DIFF)
    def diff(self, request: DiffRequest) -> DiffLocation:
        prepared = self._prepared and self._target.rebased(self._prepared)
        return self._book.diff_location(request, prepared, self._integration)

    @workflow.signal(name=Signals.SUBAGENT_PROGRESS)
    def subagent_progress(self, progress: Progress) -> None:
        self._book.record_progress(progress, workflow.now())
