"""How the service sends a decision, steer or cancel: with the verified caller's
identity claim, a deterministic update id from the caller's idempotency key, and a
bounded wait for a worker to take it (issue #11 "checked twice", #12 item 9)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from temporalio.client import WorkflowHandle

from switchboard import wire
from switchboard.audit import AuditTrail, trail
from switchboard.claim_signing import sign_claim, steer_signing_id
from switchboard.errors import Forbidden, InvalidRequest, ServiceUnavailable
from switchboard.identity import (
    CancelInput,
    Claimed,
    Identity,
    TaskPolicy,
    four_eyes_refusal,
    tenant_of,
)
from switchboard.models import (
    ApprovalRecord,
    ApproveInput,
    EventsPage,
    RejectInput,
    RequestChangesInput,
    SteerInput,
    TaskEvent,
    TaskRequest,
)
from switchboard.settings import Settings

__all__ = ["claimed", "policy_for", "refuse_four_eyes", "send_update", "unconfirmed", "update_id"]

_C = TypeVar("_C", bound=Claimed)


def claimed(message: _C, caller: Identity | None) -> _C:
    """`message` carrying `caller` as its identity claim (and `by`); unchanged without
    a caller (the workflow then refuses it if the task has a policy)."""
    if caller is None:
        return message
    return message.model_copy(update={"actor": caller, "by": caller.owner[:200]})


def policy_for(request: TaskRequest, caller: Identity | None, settings: Settings) -> TaskRequest:
    """`request` with the policy its workflow checks decisions against: set from the
    verified submitter only (whatever a caller sent is dropped)."""
    if caller is None:
        return request.model_copy(update={"policy": None})
    tenant = tenant_of(request.owner)
    policy = TaskPolicy(
        owner=request.owner,
        tenant=tenant,
        four_eyes=settings.four_eyes_for(tenant),
        submitter=caller,
    )
    return request.model_copy(update={"policy": policy})


def refuse_four_eyes(settings: Settings, owner: str, caller: Identity) -> None:
    """The API's half of four-eyes: the submitter may not approve their own task."""
    tenant = tenant_of(owner)
    if settings.four_eyes_for(tenant) and caller.owner == owner:
        raise Forbidden(four_eyes_refusal(tenant))


def update_id(update: str, caller: Identity | None, key: str | None) -> str | None:
    """The update id for an idempotency key: the same key from the same caller for the
    same action is the same update, which Temporal applies at most once."""
    if not key:
        return None
    who = caller.owner if caller else ""
    digest = hashlib.sha256(f"{update}\0{who}\0{key}".encode()).hexdigest()[:40]
    return f"{update}-{digest}"


_R = TypeVar("_R")


async def send_update(
    handle: WorkflowHandle[Any, Any],
    update: str,
    message: Claimed,
    *,
    result_type: type[_R],
    key: str | None,
    settings: Settings,
) -> _R:
    """Execute the update, waiting at most `Settings.update_wait_seconds` for a worker.

    Raises:
        ServiceUnavailable: No worker took it in time; says whether a retry is safe.
    """
    wait = settings.update_wait_seconds
    ident = update_id(update, message.actor, key)
    if settings.claim_key is not None and message.actor is not None:
        ident = ident or f"{update}-{uuid.uuid4().hex}"
        secret = settings.claim_key.get_secret_value().encode()
        signature = sign_claim(secret, handle.id, ident, update, message.actor)
        message = message.model_copy(update={"signature": signature})
    try:
        async with asyncio.timeout(wait):
            result: _R = await handle.execute_update(
                update, message, id=ident, result_type=result_type
            )
            return result
    except TimeoutError:
        raise ServiceUnavailable(
            f"{handle.id}: no worker took the {update.replace('_', ' ')} within {wait:.0f} s "
            "(is `switchboard worker` running against this Temporal server?)"
        ) from None


def unconfirmed(exc: ServiceUnavailable, keyed: bool) -> ServiceUnavailable:
    """`exc` saying what the caller needs to know: the decision is not confirmed, and
    whether a retry is safe."""
    advice = (
        "retry with the same Idempotency-Key: it is applied at most once"
        if keyed
        else "it may still be applied when a worker returns; send an Idempotency-Key "
        "header so that a retry is applied at most once"
    )
    return ServiceUnavailable(f"{exc}; not confirmed — {advice}")


def signed_steer(steer: SteerInput, task_id: str, settings: Settings) -> SteerInput:
    """`steer` with a fresh steer id and, with a claim key and a claim, its signature."""
    steer_id = uuid.uuid4().hex
    signature = None
    if settings.claim_key is not None and steer.actor is not None:
        secret = settings.claim_key.get_secret_value().encode()
        signed = steer_signing_id(steer_id, steer.guidance)
        signature = sign_claim(secret, task_id, signed, wire.Signals.STEER, steer.actor)
    return steer.model_copy(update={"steer_id": steer_id, "signature": signature})


class Decisions:
    """`TaskService`'s decisions, steering, cancel and audit trail (mixed in)."""

    _settings: Settings

    def _handle(self, task_id: str) -> WorkflowHandle[Any, Any]:
        raise NotImplementedError

    def _errors(self, task_id: str | None) -> AbstractAsyncContextManager[None]:
        raise NotImplementedError

    async def _require_running(self, task_id: str) -> None:
        raise NotImplementedError

    async def owner_of(self, task_id: str) -> str:
        raise NotImplementedError

    async def events(self, task_id: str, from_offset: int = 0, limit: int = 500) -> EventsPage:
        raise NotImplementedError

    async def approve(
        self,
        task_id: str,
        decision: ApproveInput,
        *,
        caller: Identity | None = None,
        key: str | None = None,
    ) -> ApprovalRecord:
        """Approve as `caller` (their identity claim goes with it; four-eyes is checked
        here and again by the workflow). `key`: an idempotency key (see `_decide`)."""
        if caller is not None:
            refuse_four_eyes(self._settings, await self.owner_of(task_id), caller)
        return await self._decide(task_id, wire.Updates.APPROVE, claimed(decision, caller), key)

    async def request_changes(
        self,
        task_id: str,
        decision: RequestChangesInput,
        *,
        caller: Identity | None = None,
        key: str | None = None,
    ) -> ApprovalRecord:
        if not decision.feedback.strip() and not (decision.only_failed or decision.rebase):
            raise InvalidRequest("feedback is empty: say what should change")
        message = claimed(decision, caller)
        return await self._decide(task_id, wire.Updates.REQUEST_CHANGES, message, key)

    async def reject(
        self,
        task_id: str,
        decision: RejectInput,
        *,
        caller: Identity | None = None,
        key: str | None = None,
    ) -> ApprovalRecord:
        return await self._decide(task_id, wire.Updates.REJECT, claimed(decision, caller), key)

    async def cancel(self, task_id: str, *, caller: Identity | None = None) -> None:
        """Ask the task to stop; it cleans up and ends as `cancelled`.

        First a `cancel` update with the caller's identity claim, which the workflow
        validates and records; then Temporal's cancel, which it honours."""
        await self._require_running(task_id)
        message = claimed(CancelInput(), caller)
        async with self._errors(task_id):
            handle = self._handle(task_id)
            await send_update(
                handle,
                wire.Updates.CANCEL,
                message,
                result_type=type(None),
                key=None,
                settings=self._settings,
            )
            await handle.cancel()

    async def steer(
        self, task_id: str, steer: SteerInput, *, caller: Identity | None = None
    ) -> None:
        """Send new guidance to the task's running subagents."""
        if not steer.guidance.strip():
            raise InvalidRequest("guidance is empty: say what the subagents should do differently")
        message = signed_steer(claimed(steer, caller), task_id, self._settings)
        async with self._errors(task_id):
            await self._handle(task_id).signal(wire.Signals.STEER, message)

    async def audit(self, task_id: str) -> AuditTrail:
        """Who submitted, steered, decided and cancelled the task, from its event log."""
        events: list[TaskEvent] = []
        offset, first = 0, 0
        while True:
            page = await self.events(task_id, offset, limit=2000)
            first = first if events else page.first_offset
            events.extend(page.events)
            if not page.events or page.next_offset <= offset:
                break
            offset = page.next_offset
        return AuditTrail(task_id=task_id, entries=trail(events), complete=first == 0)

    async def _decide(
        self, task_id: str, update: str, decision: Any, key: str | None
    ) -> ApprovalRecord:
        """Send a decision, waiting boundedly for a worker. With `key`, its update id is
        derived from it: a retry after a timeout is the same update, applied once."""
        try:
            async with self._errors(task_id):
                return await send_update(
                    self._handle(task_id),
                    update,
                    decision,
                    result_type=ApprovalRecord,
                    key=key,
                    settings=self._settings,
                )
        except ServiceUnavailable as exc:
            raise unconfirmed(exc, keyed=bool(key)) from exc
