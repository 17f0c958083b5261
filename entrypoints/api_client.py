"""An HTTP client of the session API, for the terminal chat, the demo and tests.

`SessionClient.events` follows a session's stream across drops and server
restarts: it reconnects with `Last-Event-ID` and applies each entry once, so a
caller sees every entry exactly once, in offset order.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx

from chat_gateway import SessionInfo, StreamItem
from entrypoints._http import ApiConnection, error_detail, server_events
from switchboard.conversation import EntryKind, SessionEntry, SessionState
from switchboard.models import DiffView, TaskStatus

__all__ = ["ApiError", "SessionClient", "render_entry"]

RECONNECT_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class ApiError(Exception):
    """The API answered with an error; `str()` is its `detail`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class SessionClient(ApiConnection):
    """Talks to one Switchboard API as one user (see `ApiConnection` for the arguments)."""

    def __init__(
        self,
        base_url: str,
        user: str = "local",
        *,
        timeout: float = 30.0,
        token: str | None = None,
    ) -> None:
        super().__init__(base_url, user, token=token, timeout=timeout)

    # ---- sessions -----------------------------------------------------------------------

    async def create_session(self, repo: str | None = None, title: str = "") -> SessionInfo:
        data = await self._call("POST", "/v1/sessions", {"repo": repo, "title": title})
        return SessionInfo.model_validate(data)

    async def state(self, session_id: str) -> SessionState:
        return SessionState.model_validate(await self._call("GET", f"/v1/sessions/{session_id}"))

    async def post(
        self, session_id: str, content: str, *, request_id: str | None = None
    ) -> dict[str, Any]:
        """Post a message (retried on a dropped connection with the same request id)."""
        body = {"content": content, "request_id": request_id or uuid.uuid4().hex}
        for delay in (*RECONNECT_SECONDS, None):
            try:
                accepted: dict[str, Any] = await self._call(
                    "POST", f"/v1/sessions/{session_id}/messages", body
                )
                return accepted
            except httpx.TransportError:
                if delay is None:
                    raise
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def events(
        self, session_id: str, from_offset: int = 0, *, reconnect: bool = True
    ) -> AsyncIterator[StreamItem]:
        """The session's stream; entries once each, across reconnects."""
        next_offset = from_offset
        attempt = 0
        while True:
            try:
                async for item in self._stream(session_id, next_offset):
                    if item.event == "entry":
                        assert item.id is not None
                        if item.id < next_offset:
                            continue
                        next_offset = item.id + 1
                    elif item.event == "ready":
                        attempt = 0
                    yield item
            except (httpx.TransportError, ApiError) as exc:
                if isinstance(exc, ApiError) and exc.status < 500:
                    raise
            if not reconnect:
                return
            await asyncio.sleep(RECONNECT_SECONDS[min(attempt, len(RECONNECT_SECONDS) - 1)])
            attempt += 1

    async def _stream(self, session_id: str, start: int) -> AsyncIterator[StreamItem]:
        headers = {"Accept": "text/event-stream"}
        if start > 0:
            headers["Last-Event-ID"] = str(start - 1)
        path = f"/v1/sessions/{session_id}/events"
        async with self._http.stream("GET", path, headers=headers) as response:
            if response.status_code >= 400:
                await response.aread()
                raise ApiError(response.status_code, error_detail(response))
            async for sse in server_events(response):
                if sse.event in ("entry", "token", "draft", "task", "turn", "ready", "error"):
                    yield StreamItem(
                        event=sse.event,
                        id=int(sse.id) if sse.id else None,
                        data=json.loads(sse.text),
                    )

    # ---- tasks --------------------------------------------------------------------------

    async def task(self, task_id: str) -> TaskStatus:
        return TaskStatus.model_validate(await self._call("GET", f"/v1/tasks/{task_id}"))

    async def diff(self, task_id: str) -> DiffView:
        return DiffView.model_validate(await self._call("GET", f"/v1/tasks/{task_id}/diff"))

    async def decide(self, task_id: str, action: str, text: str = "") -> dict[str, Any]:
        """`approve`, `reject`, `request-changes` (text = feedback), `cancel` or `steer`."""
        body: dict[str, Any] | None = None
        if action in ("approve", "reject"):
            body = {"comment": text}
        elif action == "request-changes":
            body = {"feedback": text}
        elif action == "steer":
            body = {"guidance": text}
        answer: dict[str, Any] = await self._call("POST", f"/v1/tasks/{task_id}/{action}", body)
        return answer

    async def tasks(self) -> list[dict[str, Any]]:
        data = await self._call("GET", "/v1/tasks")
        rows: list[dict[str, Any]] = data["data"]
        return rows

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = await self._http.request(method, path, json=body)
        if response.status_code >= 400:
            raise ApiError(response.status_code, error_detail(response))
        return response.json() if response.content else None


def render_entry(entry: SessionEntry) -> str | None:
    """One line (or a few) for a terminal; None for entries not worth a line."""
    if entry.kind is EntryKind.TASK_EVENT:
        kind = entry.event.value.replace("_", " ") if entry.event else "event"
        return f"  [{entry.task_id}] {kind}: {entry.content}"
    if entry.kind in (EntryKind.NOTICE, EntryKind.GAP):
        return f"  ({entry.content})"
    if entry.role == "user":
        return f"{entry.by or 'you'}> {entry.content}"
    if entry.role == "tool":
        mark = "!" if entry.is_error else "·"
        first = entry.content.splitlines()[0] if entry.content else ""
        return f"  {mark} {entry.tool_name}: {first}"
    if entry.role == "assistant" and entry.content:
        return f"switchboard> {entry.content}"
    return None
