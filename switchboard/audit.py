"""A task's audit trail: who submitted, steered, decided and cancelled it, and when.

The workflow records each of these as an event of the task's log (so it lives in the
task's Temporal history with the rest of its state) with an `audit` entry in the
event's data: the verified subject, tenant and owner key of the caller, from the
identity claim the service filled (`Claimed.actor`). `trail` reads them back out of
the event log for `GET /v1/tasks/{id}/audit` and `switchboard task audit`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from pydantic import Field

from switchboard.identity import Identity
from switchboard.models import Model, TaskEvent

__all__ = ["AUDIT_KEY", "AuditAction", "AuditEntry", "AuditTrail", "claim", "trail"]

AUDIT_KEY = "audit"
"""The key of the audit entry in a task event's `data`."""


class AuditAction(StrEnum):
    SUBMITTED = "submitted"
    STEERED = "steered"
    APPROVED = "approved"
    CHANGES_REQUESTED = "changes_requested"
    REJECTED = "rejected"
    CANCEL_REQUESTED = "cancel_requested"
    CANCELLED = "cancelled"


class AuditEntry(Model):
    """One decision or intervention, as the workflow recorded it."""

    offset: int = Field(default=0, description="The event's offset in the task's event log.")
    at: datetime
    action: AuditAction
    subject: str = Field(description="Who, as verified; empty when no identity came with it.")
    tenant: str = ""
    owner: str = Field(default="", description="The caller's owner key (`tenant/subject`).")
    via: str = Field(
        description="How the caller was identified: `oidc`, `token`, `local` (declared), or "
        "`none` (a call that reached Temporal around Switchboard, e.g. a direct cancel)."
    )
    detail: str = ""


class AuditTrail(Model):
    task_id: str
    entries: list[AuditEntry]
    complete: bool = Field(
        description="False when the oldest events were already dropped from the task's "
        "bounded event log (the history in Temporal still holds them)."
    )


def claim(
    action: AuditAction, actor: Identity | None, at: datetime, detail: str = ""
) -> dict[str, object]:
    """The `audit` entry of an event's data for `action` by `actor` (None: unknown)."""
    entry = AuditEntry(
        at=at,
        action=action,
        subject=actor.subject if actor else "",
        tenant=actor.tenant if actor else "",
        owner=actor.owner if actor else "",
        via=actor.via if actor else "none",
        detail=detail[:500],
    )
    return {AUDIT_KEY: entry.model_dump(mode="json", exclude={"offset"})}


def trail(events: Iterable[TaskEvent]) -> list[AuditEntry]:
    """The audit entries of `events`, in order."""
    entries: list[AuditEntry] = []
    for event in events:
        recorded = event.data.get(AUDIT_KEY)
        if isinstance(recorded, dict):
            entries.append(AuditEntry.model_validate({**recorded, "offset": event.offset}))
    return entries
