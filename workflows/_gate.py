"""The task's human-facing handlers: decisions, steering and an identified cancel.

Checked twice (issue #11): the API checks the caller, and the validators here check
the identity claim (`Claimed.actor`, filled by the service from the verified caller)
again against the task's `TaskPolicy` — role, tenant and four-eyes — so a refused
update never reaches the task's history. Each accepted one is recorded with the
verified subject and tenant (`switchboard.audit`), and a decision sets the
`SwitchboardApprover` search attribute.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from switchboard.audit import AuditAction, claim
    from switchboard.identity import Action, CancelInput, Identity
    from switchboard.models import (
        ApprovalRecord,
        ApproveInput,
        EventKind,
        MergeResult,
        RejectInput,
        RequestChangesInput,
        SteerInput,
        TaskRequest,
    )
    from switchboard.wire import Errors, Patches, SearchAttributes, Signals, Updates
    from workflows import _target as target
    from workflows._status import Decision, TaskBook

"""Decisions set `SwitchboardApprover` only in histories started after it came."""

_AUDIT_ACTIONS: dict[Decision, AuditAction] = {
    "approved": AuditAction.APPROVED,
    "changes_requested": AuditAction.CHANGES_REQUESTED,
    "rejected": AuditAction.REJECTED,
}


class GateHandlers:
    """Mixed into `DelegatedTaskWorkflow`, which sets these attributes in its init."""

    _request: TaskRequest
    _book: TaskBook
    _integration: MergeResult | None
    _guidance: list[str]
    _steer_ids: set[str]
    _running: dict[int, str]
    _only_failed: bool
    _rebase_asked: bool
    _cancel_actor: Identity | None

    def _authorize(
        self, actor: Identity | None, action: Action, *, approving: bool = False
    ) -> None:
        """Refuse (before anything reaches history) a claim the task's policy does not
        allow; a task started around the service has no policy and checks nothing."""
        policy = self._request.policy
        if policy is None:
            return
        reason = policy.refusal(actor, action, approving=approving)
        if reason is not None:
            raise ApplicationError(reason, type=Errors.FORBIDDEN, non_retryable=True)

    @workflow.signal(name=Signals.STEER)
    async def steer(self, steer: SteerInput) -> None:
        # A signal has no validator: a refused claim is recorded and goes no further.
        if steer.steer_id is not None:
            if steer.steer_id in self._steer_ids:
                return  # the same steer again (e.g. copied from history): applied once
            self._steer_ids.add(steer.steer_id)
        policy = self._request.policy
        refusal = policy.refusal(steer.actor, Action.STEER) if policy else None
        if refusal is not None:
            self._book.emit(
                EventKind.STEERED,
                f"steer refused, not passed on: {refusal}",
                workflow.now(),
                data={"refused": True, "by": steer.by},
            )
            return
        self._guidance.append(steer.guidance)
        waiting = "" if self._running else " (no subagent is running: kept for the next round)"
        now = workflow.now()
        self._book.emit(
            EventKind.STEERED,
            f"{steer.by} steered: {steer.guidance[:500]}{waiting}",
            now,
            data={
                "by": steer.by,
                "running": sorted(self._running),
                **claim(AuditAction.STEERED, steer.actor, now, steer.guidance),
            },
        )
        for child_id in list(self._running.values()):
            await workflow.get_external_workflow_handle(child_id).signal(Signals.STEER, steer)

    @workflow.update(name=Updates.APPROVE)
    def approve(self, decision: ApproveInput) -> ApprovalRecord:
        return self._decide("approved", decision.by, decision.comment, decision.actor)

    @approve.validator
    def _check_approve(self, decision: ApproveInput) -> None:
        self._authorize(decision.actor, Action.DECIDE, approving=True)
        self._book.require_awaiting()
        self._book.require_approvable(self._integration, drop_failed=decision.drop_failed)

    @workflow.update(name=Updates.REQUEST_CHANGES)
    def request_changes(self, decision: RequestChangesInput) -> ApprovalRecord:
        self._only_failed = decision.only_failed
        self._rebase_asked = decision.rebase
        return self._decide("changes_requested", decision.by, decision.feedback, decision.actor)

    @request_changes.validator
    def _check_request_changes(self, decision: RequestChangesInput) -> None:
        self._authorize(decision.actor, Action.DECIDE)
        self._book.require_awaiting()
        if decision.only_failed and not self._book.status.partial:
            raise ApplicationError("no subagent failed: nothing to retry", type=Errors.WRONG_PHASE)
        if decision.rebase:
            target.require_rebasable(self._book.status.target)
        elif not decision.feedback.strip() and not decision.only_failed:
            raise ApplicationError("feedback must say what to change", type=Errors.INVALID_INPUT)

    @workflow.update(name=Updates.REJECT)
    def reject(self, decision: RejectInput) -> ApprovalRecord:
        return self._decide("rejected", decision.by, decision.comment, decision.actor)

    @reject.validator
    def _check_reject(self, decision: RejectInput) -> None:
        self._authorize(decision.actor, Action.DECIDE)
        self._book.require_awaiting()

    @workflow.update(name=Updates.CANCEL)
    def cancel(self, request: CancelInput) -> None:
        """Record who asks to cancel; the service then sends Temporal's cancel, which
        the task honours as before (it always ends cancelled)."""
        self._cancel_actor = request.actor
        now = workflow.now()
        self._book.emit(
            EventKind.PHASE,
            f"cancel requested by {request.by}",
            now,
            data=claim(AuditAction.CANCEL_REQUESTED, request.actor, now),
        )

    @cancel.validator
    def _check_cancel(self, request: CancelInput) -> None:
        self._authorize(request.actor, Action.CANCEL)

    def _decide(
        self, decision: Decision, by: str, comment: str, actor: Identity | None
    ) -> ApprovalRecord:
        now = workflow.now()
        audit = claim(_AUDIT_ACTIONS[decision], actor, now, comment)
        if workflow.patched(Patches.AUDIT_APPROVER):
            approver = actor.owner if actor else by
            workflow.upsert_search_attributes([SearchAttributes.APPROVER.value_set(approver)])
        return self._book.decide(decision, by, comment, now, audit=audit)
