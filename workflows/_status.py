"""A task's bookkeeping: its `TaskStatus` and event log, kept in step. Pure, no Temporal.

`DelegatedTaskWorkflow` runs the process and passes in the time (`now`); this class
records what happened: the phase, each event, each subagent's progress and result,
the combined diff, the review and the human's decisions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from temporalio.exceptions import ApplicationError

from switchboard.contracts import (
    MergeOutcome,
    PreparedRepo,
    Progress,
    SubagentInput,
    SubagentResult,
)
from switchboard.models import (
    TOOL_LOG_KEEP,
    ApprovalRecord,
    DiffLocation,
    DiffRequest,
    EventKind,
    EventsPage,
    MergeResult,
    Phase,
    ReviewVerdict,
    Role,
    SubagentState,
    SubagentStatus,
    SubtaskSpec,
    TaskRequest,
    TaskResult,
    TaskStatus,
    ToolLog,
)
from switchboard.wire import Errors, subagent_branch, task_branch
from workflows._events import EventLog

REVIEW_INDEX_BASE = 1000
"""Reviewer runs are numbered 1000 + round so their worktrees never collide with workers'."""

Decision = Literal["approved", "changes_requested", "rejected"]

_DECISION_EVENTS = {
    "approved": EventKind.APPROVED,
    "changes_requested": EventKind.CHANGES_REQUESTED,
    "rejected": EventKind.REJECTED,
}


class TaskBook:
    def __init__(self, status: TaskStatus, events: EventLog | None = None) -> None:
        self.status = status
        self.events = events or EventLog()
        self.decision: ApprovalRecord | None = None
        """The human's decision in the current round, once made."""

    @classmethod
    def new(cls, task_id: str, request: TaskRequest, now: datetime) -> TaskBook:
        """The book of a task just accepted."""
        return cls(
            TaskStatus(
                task_id=task_id,
                goal=request.goal,
                repo=request.repo,
                owner=request.owner,
                phase=Phase.PREPARING,
                created_at=now,
                updated_at=now,
            )
        )

    def result(self) -> TaskResult:
        """What the workflow returns when it ends."""
        status = self.status
        return TaskResult(
            task_id=status.task_id,
            phase=status.phase,
            merge=status.merge,
            error=status.error,
            subagents=status.subagents,
        )

    def emit(
        self,
        kind: EventKind,
        message: str,
        now: datetime,
        *,
        subagent: int | None = None,
        data: dict[str, object] | None = None,
    ) -> None:
        self.events.append(
            kind, message, at=now, phase=self.status.phase, subagent=subagent, data=dict(data or {})
        )
        self.status.next_offset = self.events.next_offset

    def set_phase(self, phase: Phase, message: str, now: datetime) -> None:
        self.status.phase = phase
        self.status.updated_at = now
        self.emit(EventKind.PHASE, message, now, data={"phase": phase.value})

    def page(self, from_offset: int, limit: int) -> EventsPage:
        return self.events.page(from_offset, limit, final=self.status.phase.is_final)

    def diff_location(
        self, request: DiffRequest, prepared: PreparedRepo | None, integration: MergeResult | None
    ) -> DiffLocation:
        """Where the diff asked for is: a subagent's branch, or the combined commit."""
        location = DiffLocation(task_id=self.status.task_id, subagent=request.subagent)
        if prepared is None:
            return location
        location.mirror_path = prepared.mirror_path
        location.base_commit = prepared.base_commit
        if request.subagent is not None:
            if 1 <= request.subagent <= len(self.status.subagents):
                location.ref = self.status.subagents[request.subagent - 1].branch
        elif integration is not None and integration.merged:
            location.ref = integration.commit
        return location

    # ---- subagents --------------------------------------------------------------------

    def record_plan(self, subtasks: list[SubtaskSpec], now: datetime) -> None:
        task_id = self.status.task_id
        self.status.subagents = [
            SubagentStatus(index=i, title=s.title, role=s.role, branch=subagent_branch(task_id, i))
            for i, s in enumerate(subtasks, start=1)
        ]
        self.emit(
            EventKind.PLAN,
            f"{len(subtasks)} subtasks: " + "; ".join(s.title for s in subtasks),
            now,
            data={"subtasks": [s.model_dump(mode="json") for s in subtasks]},
        )

    def announce_start(self, input: SubagentInput, now: datetime) -> None:
        """A child run started (Temporal confirmed it)."""
        message = f"{input.subtask.role.value} started: {input.subtask.title}"
        if input.index >= REVIEW_INDEX_BASE:
            self.emit(EventKind.REVIEW, f"reviewer: {message}", now)
        else:
            self.emit(
                EventKind.SUBAGENT_STARTED, f"#{input.index} {message}", now, subagent=input.index
            )

    def record_progress(self, progress: Progress, now: datetime) -> None:
        """A child's report: its counters, and a step or refused call in the log."""
        if progress.index >= REVIEW_INDEX_BASE:
            self.emit(EventKind.REVIEW, f"reviewer: {progress.message}", now, data=progress.data)
            return
        if not 1 <= progress.index <= len(self.status.subagents):
            return
        status = self.status.subagents[progress.index - 1]
        status.steps = progress.steps
        status.tokens = progress.tokens
        status.tool_calls = progress.tool_calls
        status.denied_calls = progress.denied_calls
        for used in progress.data.get("tools") or []:
            status.tools.append(ToolLog.model_validate({"step": progress.steps, **used}))
        del status.tools[:-TOOL_LOG_KEEP]
        kind = {
            "denied": EventKind.TOOL_DENIED,
            "waiting": EventKind.SUBAGENT_WAITING,
        }.get(progress.kind, EventKind.SUBAGENT_STEP)
        self.emit(
            kind,
            f"#{progress.index} {progress.message}",
            now,
            subagent=progress.index,
            data={**progress.data, "steps": progress.steps, "tokens": progress.tokens},
        )

    def worker_branches(self) -> list[str]:
        """The branches to integrate: every worker's that did not fail."""
        return [
            s.branch
            for s in self.status.subagents
            if s.role is Role.WORKER and s.state is not SubagentState.FAILED
        ]

    def record_result(self, status: SubagentStatus, result: SubagentResult, now: datetime) -> None:
        """A child's result: the authoritative end of its run."""
        status.state = result.state
        status.steps = max(status.steps, result.steps)
        status.tokens = max(status.tokens, result.tokens)
        status.tool_calls = max(status.tool_calls, result.tool_calls)
        status.denied_calls = max(status.denied_calls, result.denied_calls)
        status.summary = result.summary
        status.error = result.error
        if result.diff_stat is not None:
            status.diff_stat = result.diff_stat
        status.finished_at = now
        self.emit(
            EventKind.SUBAGENT_FINISHED,
            f"#{status.index} {status.title}: {result.state.value}"
            + (f" — {result.error}" if result.error else ""),
            now,
            subagent=status.index,
            data={
                "state": result.state.value,
                "summary": result.summary[:2000],
                "diff_stat": result.diff_stat.model_dump() if result.diff_stat else None,
            },
        )

    def record_review(self, result: SubagentResult, now: datetime) -> None:
        if result.state is SubagentState.FAILED:
            self.emit(EventKind.REVIEW, f"review failed: {result.error}", now)
            return
        verdict = "approve" if result.verdict == "approve" else "request_changes"
        self.status.review = ReviewVerdict(verdict=verdict, comments=result.summary)
        self.emit(
            EventKind.REVIEW,
            f"reviewer says {verdict}: {result.summary[:500]}",
            now,
            data={"verdict": verdict, "comments": result.summary[:5000]},
        )

    # ---- the combined change and the human ---------------------------------------------

    def record_integration(self, outcome: MergeOutcome, now: datetime, *, publish: bool) -> None:
        self.status.diff_stat = outcome.stat
        if not outcome.result.merged:
            self.status.merge = outcome.result
            self.emit(
                EventKind.MERGE_CONFLICT,
                outcome.result.message
                or "subagent branches conflict in " + ", ".join(outcome.result.conflicts),
                now,
                data={"conflicts": outcome.result.conflicts},
            )
        elif not publish:
            self.emit(
                EventKind.DIFF_READY,
                f"combined diff: {outcome.stat.files_changed} files, "
                f"+{outcome.stat.insertions} -{outcome.stat.deletions}",
                now,
                data={"diff_stat": outcome.stat.model_dump()},
            )

    def record_merge(self, result: MergeResult, now: datetime) -> None:
        """The combined change merged (and published, unless `result.branch` says otherwise)."""
        if result.branch != task_branch(self.status.task_id):
            # Publishing to the user's repo failed (e.g. that branch is checked out there).
            self.emit(EventKind.MERGED, f"merged, but not published: {result.message}", now)
        self.emit(
            EventKind.MERGED,
            f"merged into {result.branch} at {(result.commit or '')[:12]}"
            + (" and pushed" if result.pushed else ""),
            now,
            data=result.model_dump(),
        )

    def judge_round(self) -> None:
        """After a round: fail a task none of whose workers succeeded (or whose every
        subagent failed); otherwise name the failed workers, so the gate shows *partial*."""
        subagents = self.status.subagents
        workers = [s for s in subagents if s.role is Role.WORKER]
        failed = [s for s in workers if s.state is SubagentState.FAILED]
        self.status.partial = [s.index for s in failed]
        every = all(s.state is SubagentState.FAILED for s in subagents)
        if every or (workers and len(failed) == len(workers)):
            lost = [s for s in subagents if s.state is SubagentState.FAILED]
            raise ApplicationError(
                "no worker succeeded: " + "; ".join(_failed_line(s) for s in lost),
                type=Errors.TASK_FAILED,
                non_retryable=True,
            )

    def partial_advice(self) -> str:
        """Which workers failed and why, and the two choices the human has."""
        failed = [self.status.subagents[i - 1] for i in self.status.partial]
        return (
            "partial result: "
            + "; ".join(_failed_line(s) for s in failed)
            + ". Approve with drop_failed to merge the rest without them, or request "
            "changes with only_failed to retry them"
        )

    def note_published(self, result: MergeResult) -> None:
        if result.merged and result.branch == task_branch(self.status.task_id):
            self.status.published = result.branch

    def record_cancel(self, now: datetime, audit: dict[str, object] | None = None) -> None:
        published = self.status.published
        kept = f"branch {published} was already published and stays in your repository"
        self.emit(
            EventKind.CANCELLED,
            "task cancelled; worktrees and sandboxes removed; "
            + (kept if published else "nothing was published"),
            now,
            data={"published": published, **(audit or {})},
        )

    def ask_for_approval(self, now: datetime, *, conflicted: bool) -> None:
        message = "approve, request changes or reject"
        if conflicted:
            message += " (the branches conflict: approval is refused)"
        if self.status.partial:
            message += f" — {self.partial_advice()}"
        if self.status.target and self.status.target.behind:
            message += f" — {self.status.target.message}"
        self.emit(
            EventKind.APPROVAL_NEEDED,
            message,
            now,
            data={
                "diff_stat": self.status.diff_stat.model_dump() if self.status.diff_stat else None,
                "review": self.status.review.model_dump() if self.status.review else None,
                "target": self.status.target.model_dump(mode="json")
                if self.status.target
                else None,
                "partial": [
                    {"index": i, "error": self.status.subagents[i - 1].error}
                    for i in self.status.partial
                ],
            },
        )

    def require_awaiting(self) -> None:
        """Refuse a decision unless the task waits for one (and none was made yet)."""
        made = self.decision
        if made is not None and self.status.phase is Phase.AWAITING_APPROVAL:
            raise ApplicationError(
                f"task {self.status.task_id} was already decided in round {made.round}: "
                f"{made.decision.replace('_', ' ')} by {made.by}",
                type=Errors.WRONG_PHASE,
            )
        if self.status.phase is not Phase.AWAITING_APPROVAL:
            raise ApplicationError(
                f"task {self.status.task_id} is {self.status.phase.value}, not awaiting approval",
                type=Errors.WRONG_PHASE,
            )

    def require_approvable(self, integration: MergeResult | None, *, drop_failed: bool) -> None:
        """Refuse an approval of branches that conflict, of an empty change, or of a
        partial result the caller did not choose to accept without its failed workers."""
        if integration is not None and not integration.merged:
            raise ApplicationError(
                "cannot approve: the subagent branches conflict in "
                + ", ".join(integration.conflicts)
                + "; request changes or reject",
                type=Errors.WRONG_PHASE,
            )
        if self.status.partial and not drop_failed:
            raise ApplicationError(
                f"cannot approve: {self.partial_advice()}", type=Errors.WRONG_PHASE
            )
        stat = self.status.diff_stat
        if stat is None or stat.files_changed == 0:
            raise ApplicationError(
                "cannot approve: the combined change is empty (nothing to merge); "
                "request changes or reject",
                type=Errors.WRONG_PHASE,
            )

    def decide(
        self, decision: Decision, by: str, comment: str, now: datetime, audit: dict[str, object]
    ) -> ApprovalRecord:
        record = ApprovalRecord(
            decision=decision, by=by, at=now, comment=comment, round=self.status.round
        )
        self.decision = record
        self.status.approvals.append(record)
        self.emit(
            _DECISION_EVENTS[decision],
            f"{decision.replace('_', ' ')} by {by}" + (f": {comment[:500]}" if comment else ""),
            now,
            data={**record.model_dump(mode="json"), **audit},
        )
        return record


def _failed_line(status: SubagentStatus) -> str:
    return f"#{status.index} {status.title} failed ({status.error or 'no reason given'})"


def failure_message(err: BaseException) -> str:
    """The message of the outermost application error in a Temporal failure chain.

    That is Switchboard's own wording (with its advice, e.g. "check
    SWITCHBOARD_LLM_API_KEY"); the causes below it are the library errors it wraps.
    Without any application error, the innermost message.
    """
    message = str(err)
    current: BaseException | None = err
    while current is not None:
        if isinstance(current, ApplicationError) and current.message:
            return current.message
        if str(current):
            message = str(current)
        current = current.__cause__
    return message
