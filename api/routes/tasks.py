"""`/v1/tasks`: delegate, list, inspect, stream, decide, steer and cancel tasks.

Every route takes the verified caller (`CurrentIdentity`). A task the caller may not
see (another tenant's, or another user's for a plain requester) answers 404 exactly
like one that does not exist, checked before the workflow is asked anything; a task
they see without the role an action needs answers 403 naming the role.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Response, status
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.deps import CallerIsRemote, CurrentIdentity, Service
from api.openapi import ErrorBody
from api.schemas import (
    ApproveBody,
    RejectBody,
    RequestChangesBody,
    SteerBody,
    TaskActionAccepted,
    TaskCreate,
    TasksPublic,
)
from switchboard.audit import AuditTrail
from switchboard.errors import ServiceError
from switchboard.identity import Action
from switchboard.models import (
    ApprovalRecord,
    ApproveInput,
    DiffView,
    FollowNotice,
    RejectInput,
    RequestChangesInput,
    SteerInput,
    TaskStatus,
    TaskSubmitted,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])

PING_SECONDS = 15
"""Keep-alive comments so proxies do not close an idle stream."""

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No credentials, or ones that do not verify.", "model": ErrorBody},
    403: {"description": "You lack the role this needs (named).", "model": ErrorBody},
    404: {"description": "No such task, or not one you may see.", "model": ErrorBody},
    409: {"description": "The task is not in a phase that allows this.", "model": ErrorBody},
    503: {"description": "Temporal or the workers are not answering.", "model": ErrorBody},
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"description": "The request id matched an existing task."},
        400: {
            "description": "The repository cannot be used (not allowed, or not a repository).",
            "model": ErrorBody,
        },
        429: {
            "description": "Your tenant is at a limit (named): concurrent tasks or model "
            "tokens per day. `Retry-After` says when to try again.",
            "model": ErrorBody,
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        },
        **_ERRORS,
    },
)
async def submit_task(
    body: TaskCreate,
    service: Service,
    caller: CurrentIdentity,
    remote: CallerIsRemote,
    response: Response,
) -> TaskSubmitted:
    """Delegate a task. With `request_id`, a retry returns the same task (200).

    Local repository paths must lie under the server's allowed roots (none for
    remote callers); anything else gets one message that says nothing about disk.
    The tenant's limit on parallel subagents lowers `max_parallel` (said in `notice`)."""
    caller.require(Action.SUBMIT, caller.owner)
    request = body.to_request(owner=caller.owner)
    submitted = await service.submit(request, remote=remote, caller=caller)
    if not submitted.created:
        response.status_code = status.HTTP_200_OK
    return submitted


@router.get("", responses=_ERRORS)
async def list_tasks(
    service: Service,
    caller: CurrentIdentity,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> TasksPublic:
    """Recent tasks the caller may see (from Temporal visibility, newest activity first):
    their own, or their tenant's for an approver or tenant admin, or all for an admin."""
    owner, tenant = caller.list_scope()
    data = await service.list(owner=owner, tenant=tenant, limit=limit)
    return TasksPublic(data=data, count=len(data))


@router.get("/{task_id}", responses=_ERRORS)
async def get_task(task_id: str, service: Service, caller: CurrentIdentity) -> TaskStatus:
    """Live status: phase, subagents, review, approvals, merge."""
    await service.check_access(task_id, caller, Action.READ)
    return await service.status(task_id)


@router.get("/{task_id}/diff", responses=_ERRORS)
async def get_diff(
    task_id: str,
    service: Service,
    caller: CurrentIdentity,
    subagent: Annotated[int | None, Query(ge=0, description="One subagent's diff.")] = None,
) -> DiffView:
    """The task's combined diff, or one subagent's (read from git, never from history)."""
    await service.check_access(task_id, caller, Action.READ)
    return await service.diff(task_id, subagent)


@router.get(
    "/{task_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "Server-sent events: `id` is the offset, `event` the kind, "
            "`data` the event as JSON. The stream ends after the task's last event. "
            "While no worker answers (or Temporal is unreachable) the stream stays open "
            "and says so once with a `worker_unavailable` event, then `worker_back` "
            "when events flow again (both without `id`: they are not task events). "
            "An `error` event ends it only when following failed for another reason "
            "(reconnect with Last-Event-ID to resume).",
            "content": {"text/event-stream": {}},
        },
        **_ERRORS,
    },
)
async def stream_events(
    task_id: str,
    service: Service,
    caller: CurrentIdentity,
    from_offset: Annotated[int, Query(alias="from", ge=0, description="First offset to send.")] = 0,
    last_event_id: Annotated[
        str | None,
        Header(description="Resume after this offset (sent by EventSource on reconnect)."),
    ] = None,
) -> EventSourceResponse:
    """Stream the task's events live; reconnect with `Last-Event-ID` to lose none."""
    start = from_offset
    if last_event_id is not None and last_event_id.strip():
        if not last_event_id.strip().isdigit():
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                f"Last-Event-ID must be an event offset (a number), got {last_event_id!r}",
            )
        start = int(last_event_id) + 1
    await service.check_access(task_id, caller, Action.READ)
    return EventSourceResponse(_event_stream(service, task_id, start), ping=PING_SECONDS)


async def _event_stream(
    service: Service, task_id: str, start: int
) -> AsyncIterator[ServerSentEvent]:
    try:
        async for event in service.watch(task_id, start):
            if isinstance(event, FollowNotice):  # no id: not an event of the task's log
                yield ServerSentEvent(data=event.model_dump_json(), event=event.kind.value)
                continue
            yield ServerSentEvent(
                data=event.model_dump_json(), event=event.kind.value, id=str(event.offset)
            )
    except ServiceError as exc:
        # Headers are sent already: report the failure in-band and end the stream.
        yield ServerSentEvent(data=json.dumps({"detail": str(exc)}), event="error")


IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=200,
        description="Makes a retried decision safe: the same key from the same caller is "
        "the same decision, applied at most once (send it again after a 503 or a timeout).",
    ),
]

_DECISION_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    403: {
        "description": "You lack the role this needs (named), or four-eyes is on for the "
        "tenant and you submitted the task. The task's workflow checks the same again.",
        "model": ErrorBody,
    },
    503: {
        "description": "No worker took the decision within `SWITCHBOARD_UPDATE_WAIT_SECONDS` "
        "(30 s): it is not confirmed; retry with the same `Idempotency-Key`.",
        "model": ErrorBody,
    },
}


@router.post("/{task_id}/approve", responses=_DECISION_ERRORS)
async def approve_task(
    task_id: str,
    service: Service,
    caller: CurrentIdentity,
    body: ApproveBody | None = None,
    idempotency_key: IdempotencyKey = None,
) -> ApprovalRecord:
    """Approve the diff; the task merges it. The approver is the verified caller."""
    await service.check_access(task_id, caller, Action.DECIDE)
    body = body or ApproveBody()
    decision = ApproveInput(comment=body.comment, drop_failed=body.drop_failed)
    return await service.approve(task_id, decision, caller=caller, key=idempotency_key)


@router.post("/{task_id}/request-changes", responses=_DECISION_ERRORS)
async def request_changes(
    task_id: str,
    body: RequestChangesBody,
    service: Service,
    caller: CurrentIdentity,
    idempotency_key: IdempotencyKey = None,
) -> ApprovalRecord:
    """Send the subagents back to work with feedback (approver role)."""
    await service.check_access(task_id, caller, Action.DECIDE)
    decision = RequestChangesInput(
        feedback=body.feedback, only_failed=body.only_failed, rebase=body.rebase
    )
    return await service.request_changes(task_id, decision, caller=caller, key=idempotency_key)


@router.post("/{task_id}/reject", responses=_DECISION_ERRORS)
async def reject_task(
    task_id: str,
    service: Service,
    caller: CurrentIdentity,
    body: RejectBody | None = None,
    idempotency_key: IdempotencyKey = None,
) -> ApprovalRecord:
    """Reject the diff; the task ends without merging (approver role)."""
    await service.check_access(task_id, caller, Action.DECIDE)
    decision = RejectInput(comment=body.comment if body else "")
    return await service.reject(task_id, decision, caller=caller, key=idempotency_key)


@router.post("/{task_id}/cancel", status_code=status.HTTP_202_ACCEPTED, responses=_ERRORS)
async def cancel_task(
    task_id: str, service: Service, caller: CurrentIdentity
) -> TaskActionAccepted:
    """Ask the task to stop; it cleans up and ends as `cancelled`. Who asked is checked
    by the task's workflow too and recorded in its audit trail."""
    await service.check_access(task_id, caller, Action.CANCEL)
    await service.cancel(task_id, caller=caller)
    return TaskActionAccepted(task_id=task_id, action="cancel")


@router.post("/{task_id}/steer", status_code=status.HTTP_202_ACCEPTED, responses=_ERRORS)
async def steer_task(
    task_id: str, body: SteerBody, service: Service, caller: CurrentIdentity
) -> TaskActionAccepted:
    """Give running subagents new guidance."""
    await service.check_access(task_id, caller, Action.STEER)
    await service.steer(task_id, SteerInput(guidance=body.guidance), caller=caller)
    return TaskActionAccepted(task_id=task_id, action="steer")


@router.get("/{task_id}/audit", responses=_ERRORS)
async def get_audit(task_id: str, service: Service, caller: CurrentIdentity) -> AuditTrail:
    """Who submitted, steered, approved, requested changes, rejected and cancelled the
    task, and when: the verified subject and tenant the task's workflow recorded."""
    await service.check_access(task_id, caller, Action.READ)
    return await service.audit(task_id)
