"""The target branch at the gate and at merge (issue #12 item 6): pure, no Temporal.

The task's change is based on the target's tip as it was when the task started. The
gate (before it parks) and the merge (before it publishes) compare it with the
target's current tip (`check_target`); this module books what they found and decides
what it means: an event naming how far behind and any conflict, whether a rebase
round may run, and whether the merge must stop. `TargetTracker` holds the base the
change is on (moved by a rebase round); the rest is pure.

The gate's check is begun beside the integration when no review follows (`begin`), so
the task reaches its gate without waiting for it; only when the target moved does
the gate check again, for conflicts with the integrated change.

Runs begun before the check existed replay without it (`Patches.TARGET_CHECK`), and
those begun before it ran beside the integration replay it at the gate
(`Patches.TARGET_CHECK_BESIDE`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from switchboard.contracts import PreparedRepo, TargetInput
    from switchboard.models import EventKind, MergeResult, TargetCheck, TaskRequest
    from switchboard.wire import Errors, Patches
    from workflows import _calls as calls
    from workflows._status import TaskBook, failure_message

GATE = "at the gate"
REBASE_ADVICE = "request changes with rebase to rebase it onto the new tip (review runs again)"


class TargetTracker:
    """The target-branch side of one task: its checks and the base the change is on."""

    def __init__(self, request: TaskRequest, book: TaskBook) -> None:
        self._request = request
        self._book = book
        self._onto: str | None = None
        """The target's tip the change was rebased onto (None: the task's base)."""
        self._ahead: asyncio.Task[TargetCheck | None] | None = None
        """The gate's tip check, begun beside the integration (`begin`)."""

    def base(self, prepared: PreparedRepo) -> str:
        """The commit the change is merged onto (the task's base, or a rebase's tip)."""
        return self._onto or prepared.base_commit

    def rebased(self, prepared: PreparedRepo) -> PreparedRepo:
        """`prepared` with the base the change is on now (for diffs)."""
        return prepared.model_copy(update={"base_commit": self.base(prepared)})

    def begin(self, prepared: PreparedRepo | None) -> None:
        """Begin the gate's check now, beside the integration that comes before the gate
        (no review between them): the tip and how far behind it the base is. The gate
        takes it as found unless the target moved (then it checks the integrated change
        for conflicts), so what it shows is what a check at the gate shows."""
        self._ahead = None
        if (
            prepared is None
            or not workflow.patched(Patches.TARGET_CHECK_BESIDE)
            or not workflow.patched(Patches.TARGET_CHECK)
        ):
            return
        self._ahead = asyncio.ensure_future(
            self._tip_only(self._input(prepared, None), prepared.host_queue)
        )

    async def check(
        self, prepared: PreparedRepo | None, integration: MergeResult | None, at: str
    ) -> TargetCheck | None:
        """Compare the change with the target's tip now, and book it; None for runs
        begun before the check existed, or when the repository cannot be read (said so)."""
        if prepared is None:
            return None
        merged = integration if integration is not None and integration.merged else None
        ahead, self._ahead = self._ahead, None
        found = await ahead if ahead is not None and at == GATE else None
        if found is not None and not (found.behind and merged is not None):
            record(self._book, found, workflow.now(), at=at)
            return found
        if not workflow.patched(Patches.TARGET_CHECK):
            return None
        try:
            check = await calls.check_target(
                self._input(prepared, merged), queue=prepared.host_queue
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            message = f"{at}: the target branch could not be checked: {failure_message(err)}"
            self._book.emit(EventKind.TARGET_MOVED, message, workflow.now())
            return None
        record(self._book, check, workflow.now(), at=at)
        return check

    def _input(self, prepared: PreparedRepo, merged: MergeResult | None) -> TargetInput:
        return TargetInput(
            task_id=self._book.status.task_id,
            repo=self._request.repo,
            mirror_path=prepared.mirror_path,
            credential_ref=self._request.credential_ref,
            branch=prepared.base_ref,
            base_commit=self.base(prepared),
            change_commit=merged.commit if merged is not None else None,
        )

    @staticmethod
    async def _tip_only(check: TargetInput, queue: str) -> TargetCheck | None:
        """A check begun ahead; None when it failed (the gate then checks as before).
        A cancel stays a cancel, as in `check`."""
        try:
            return await calls.check_target(check, queue=queue)
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            return None

    async def stops_merge(
        self, prepared: PreparedRepo | None, integration: MergeResult | None
    ) -> bool:
        """Check again before publishing; True (said so) when the target moved since
        the approval into a conflict the approver was not shown."""
        seen = self._book.status.target
        now = await self.check(prepared, integration, "at merge")
        why = stops_merge(seen, now) if now is not None else ""
        if why:
            self._book.emit(EventKind.TARGET_MOVED, why, workflow.now())
        return bool(why)

    async def rebase(
        self,
        prepared: PreparedRepo,
        integration: MergeResult | None,
        integrate: Callable[[], Awaitable[MergeResult]],
    ) -> bool:
        """A rebase round: merge the subagent branches onto the target's tip instead
        (`integrate` reads `base`). A conflict refuses it, said so, and leaves the change
        where it was (False)."""
        check = await self.check(prepared, integration, "rebase")
        try:
            require_rebasable(check)
        except ApplicationError as err:
            self._book.emit(EventKind.TARGET_MOVED, f"not rebased: {err.message}", workflow.now())
            return False
        assert check is not None and check.tip is not None
        previous, self._onto = self._onto, check.tip
        result = await integrate()
        if result.merged:
            message = f"rebased onto {check.branch} at {check.tip[:12]}"
            self._book.emit(EventKind.TARGET_MOVED, message, workflow.now())
            return True
        self._onto = previous
        await integrate()  # back where it was
        self._book.emit(
            EventKind.TARGET_MOVED, rebase_refused(check, result.conflicts), workflow.now()
        )
        return False


def record(book: TaskBook, check: TargetCheck, now: datetime, *, at: str) -> None:
    """Keep the check in the status; a moved target is an event (never silent)."""
    book.status.target = check
    if not check.behind:
        return
    advice = ""
    if at == GATE:
        advice = "; " + (
            "approving publishes a branch that conflicts with it: resolve by hand, "
            "request changes, or reject"
            if check.conflicts
            else REBASE_ADVICE
        )
    book.emit(
        EventKind.TARGET_MOVED,
        f"{at}: the change is {check.message}{advice}",
        now,
        data=check.model_dump(mode="json"),
    )


def require_rebasable(check: TargetCheck | None) -> None:
    """Refuse a rebase round that cannot run: nothing to rebase onto, or a conflict."""
    if check is None or check.tip is None:
        why = check.message if check is not None else "the target branch was not checked"
        raise ApplicationError(f"cannot rebase: {why}", type=Errors.WRONG_PHASE)
    if not check.behind:
        raise ApplicationError(
            f"nothing to rebase: the change is {check.message}", type=Errors.WRONG_PHASE
        )
    if check.conflicts:
        raise ApplicationError(
            f"cannot rebase: the change is {check.message}; request changes with feedback, "
            "approve and resolve the conflict by hand, or reject",
            type=Errors.WRONG_PHASE,
        )


def stops_merge(seen: TargetCheck | None, now: TargetCheck) -> str:
    """Why the merge must not go ahead ("" when it may): the target moved since the
    approval and now conflicts, which the approver was not shown."""
    if not now.conflicts or (seen is not None and seen.tip == now.tip):
        return ""
    return (
        f"not merged: {now.branch} moved since the approval and the change is now "
        f"{now.message}; decide again (request changes, or reject)"
    )


def rebase_refused(check: TargetCheck, conflicts: list[str]) -> str:
    return (
        f"not rebased: merging the subagent branches onto {check.branch} at "
        f"{(check.tip or '')[:12]} conflicts in {', '.join(conflicts)}; the change stays "
        f"on {check.base_commit[:12]}"
    )
