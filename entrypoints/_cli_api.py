"""`switchboard task ...` through the API, as the signed-in user.

`ApiTasks` offers the `TaskService` calls the CLI makes, each as one request to
the REST API with the user's bearer token (`--token`, `SWITCHBOARD_TOKEN` or
`switchboard login`), so the API's checks (tenant, roles) apply to the CLI as to
any client. Error statuses come back as the service's own errors, so the CLI
reports them the same way whichever route it took.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from entrypoints._http import ApiConnection, error_detail, server_events
from switchboard.audit import AuditTrail
from switchboard.errors import (
    Forbidden,
    InvalidRequest,
    Refused,
    ServiceError,
    ServiceUnavailable,
    TaskNotFound,
    Unauthenticated,
    WrongPhase,
)
from switchboard.models import (
    ApprovalRecord,
    ApproveInput,
    DiffView,
    FollowNotice,
    RejectInput,
    RequestChangesInput,
    SteerInput,
    TaskEvent,
    TaskRequest,
    TaskStatus,
    TaskSubmitted,
    TaskSummary,
)

__all__ = ["ApiTasks"]

RECONNECT_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)
"""A watch whose connection drops reconnects from its next offset after these pauses."""

_ERROR_OF: dict[int, type[ServiceError]] = {
    400: InvalidRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: TaskNotFound,
    409: WrongPhase,
    422: InvalidRequest,
    429: ServiceUnavailable,
    502: Refused,
    503: ServiceUnavailable,
    504: ServiceUnavailable,
}
API_LIST_LIMIT = 500
"""The most tasks `GET /v1/tasks` returns at once."""
_REQUEST_ONLY = {"owner", "credential_ref", "policy"}
"""`TaskRequest` fields the server sets itself (a client never sends them)."""


class ApiTasks(ApiConnection):
    """The task calls of the CLI, made to the API at `base_url` as `user`
    (see `ApiConnection` for the arguments)."""

    def __init__(self, base_url: str, user: str, token: str | None = None) -> None:
        super().__init__(base_url, user, token=token, timeout=60.0)

    async def submit(self, request: TaskRequest) -> TaskSubmitted:
        body = request.model_dump(mode="json", exclude=_REQUEST_ONLY)
        return TaskSubmitted.model_validate(await self._call("POST", "/v1/tasks", body))

    async def list(self, owner: str | None = None, limit: int = 50) -> list[TaskSummary]:
        """The tasks the caller may see (the API decides which); `owner` narrows them."""
        params = {"limit": min(limit, API_LIST_LIMIT)}
        data = await self._call("GET", "/v1/tasks", params=params)
        tasks = [TaskSummary.model_validate(row) for row in data["data"]]
        return [t for t in tasks if owner is None or t.owner == owner]

    async def status(self, task_id: str) -> TaskStatus:
        return TaskStatus.model_validate(await self._call("GET", f"/v1/tasks/{task_id}"))

    async def diff(self, task_id: str, subagent: int | None = None) -> DiffView:
        params = {} if subagent is None else {"subagent": subagent}
        data = await self._call("GET", f"/v1/tasks/{task_id}/diff", params=params)
        return DiffView.model_validate(data)

    async def approve(self, task_id: str, decision: ApproveInput) -> ApprovalRecord:
        body = {"comment": decision.comment, "drop_failed": decision.drop_failed}
        return await self._decide(task_id, "approve", body)

    async def request_changes(self, task_id: str, decision: RequestChangesInput) -> ApprovalRecord:
        body = decision.model_dump(mode="json", include={"feedback", "only_failed", "rebase"})
        return await self._decide(task_id, "request-changes", body)

    async def reject(self, task_id: str, decision: RejectInput) -> ApprovalRecord:
        return await self._decide(task_id, "reject", {"comment": decision.comment})

    async def cancel(self, task_id: str) -> None:
        await self._call("POST", f"/v1/tasks/{task_id}/cancel")

    async def steer(self, task_id: str, steer: SteerInput) -> None:
        await self._call("POST", f"/v1/tasks/{task_id}/steer", {"guidance": steer.guidance})

    async def audit(self, task_id: str) -> AuditTrail:
        return AuditTrail.model_validate(await self._call("GET", f"/v1/tasks/{task_id}/audit"))

    async def watch(
        self, task_id: str, from_offset: int = 0
    ) -> AsyncIterator[TaskEvent | FollowNotice]:
        """The task's events from `from_offset` until it ends; a dropped connection is
        resumed from the next offset (each event once)."""
        next_offset, attempt = from_offset, 0
        while True:
            try:
                async for event in self._events(task_id, next_offset):
                    if isinstance(event, TaskEvent):
                        next_offset, attempt = event.offset + 1, 0
                    yield event
                return
            except httpx.TransportError as exc:
                if attempt == len(RECONNECT_SECONDS):
                    raise self._unreachable(exc) from exc
                await asyncio.sleep(RECONNECT_SECONDS[attempt])
                attempt += 1

    async def _events(self, task_id: str, start: int) -> AsyncIterator[TaskEvent | FollowNotice]:
        path = f"/v1/tasks/{task_id}/events"
        params = {"from": start}
        async with self._http.stream("GET", path, params=params) as response:
            if response.status_code >= 400:
                await response.aread()
                raise _error(response)
            async for sse in server_events(response):
                if sse.event == "error":
                    raise ServiceError(str(json.loads(sse.text).get("detail", sse.text)))
                if sse.event in ("worker_unavailable", "worker_back"):
                    yield FollowNotice.model_validate_json(sse.text)
                else:
                    yield TaskEvent.model_validate_json(sse.text)

    async def _decide(self, task_id: str, action: str, body: dict[str, Any]) -> ApprovalRecord:
        data = await self._call("POST", f"/v1/tasks/{task_id}/{action}", body)
        return ApprovalRecord.model_validate(data)

    async def _call(
        self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        try:
            response = await self._http.request(method, path, json=body, params=params)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 400:
            raise _error(response)
        return response.json() if response.content else None

    def _unreachable(self, exc: httpx.TransportError) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"the Switchboard API is not reachable at {self.base_url} ({type(exc).__name__}): "
            "start it with 'switchboard up' (or 'switchboard api'), or point "
            "SWITCHBOARD_API_URL at it; an operator with access to Temporal may use "
            "'switchboard task --direct ...' instead (no identity checks)"
        )


def _error(response: httpx.Response) -> ServiceError:
    return _ERROR_OF.get(response.status_code, ServiceError)(error_detail(response))
