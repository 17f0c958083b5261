"""Pure helpers of the task service: summaries, closed phases, visibility quoting, messages."""

from __future__ import annotations

import hashlib
from typing import Any

from temporalio.client import WorkflowExecutionDescription, WorkflowExecutionStatus
from ulid import ULID

from switchboard import wire
from switchboard.models import Phase, TaskSummary

__all__ = [
    "closed_phase",
    "ended_message",
    "not_found_message",
    "one_line",
    "quote",
    "summary",
    "task_id_for",
]

_PHASE_VALUES = frozenset(phase.value for phase in Phase)


def task_id_for(owner: str, request_id: str | None) -> str:
    """A new task id, or the one a client request id always maps to for this owner.

    The ULID of an idempotent submit is derived from sha256(owner, request_id), so
    retrying the same request reaches the same workflow id and starts it once.
    """
    if request_id is None:
        return f"{wire.TASK_ID_PREFIX}{ULID()}"
    digest = hashlib.sha256(f"{owner}\n{request_id}".encode()).digest()
    return f"{wire.TASK_ID_PREFIX}{ULID.from_bytes(digest[:16])}"


def closed_phase(description: WorkflowExecutionDescription) -> Phase:
    recorded = description.typed_search_attributes.get(wire.SearchAttributes.PHASE)
    if recorded in _PHASE_VALUES and Phase(recorded).is_final:
        return Phase(recorded)
    if description.status == WorkflowExecutionStatus.CANCELED:
        return Phase.CANCELLED
    return Phase.FAILED


def summary(execution: Any) -> TaskSummary:
    attributes = execution.typed_search_attributes
    status = execution.status
    phase = attributes.get(wire.SearchAttributes.PHASE) or ""
    if status is not None and status != WorkflowExecutionStatus.RUNNING:
        phase = closed_phase(execution).value
    return TaskSummary(
        task_id=execution.id,
        phase=phase,
        owner=attributes.get(wire.SearchAttributes.OWNER) or "",
        repo=attributes.get(wire.SearchAttributes.REPO) or "",
        status=status.name.lower() if status is not None else "unknown",
        started_at=execution.start_time,
    )


def quote(value: str) -> str:
    """A visibility-query string literal (backslash escapes quote and backslash)."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def one_line(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def not_found_message(task_id: str) -> str:
    return f"no task {task_id!r}: list your tasks with `switchboard task list` or GET /v1/tasks"


def ended_message(task_id: str, description: WorkflowExecutionDescription) -> str:
    phase = closed_phase(description)
    return f"{task_id} has already ended ({phase.value}); nothing can change it now"
