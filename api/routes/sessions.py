"""`/v1/sessions`: chat sessions, their messages, and one event stream per session.

The stream (SSE) carries everything a client shows:
`entry` events (messages, tool results, notable task events; `id:` is the
entry's offset), `token` previews of the answer being written, `draft` (the
text so far, for a client joining mid-answer), `task` (a task's live status and
new events), `turn` markers, and `ready` once the backlog is sent. Reconnect
with `Last-Event-ID` (or `?from=`) to resume with nothing lost or repeated.
The router's lifespan owns the one `Gateway` of the process.

No WebSocket twin: the installed server (uvicorn without `websockets`) cannot
serve one, and SSE plus POST covers every use; `Gateway.stream` is
transport-agnostic if one is wanted later.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Query,
    Request,
    status,
)
from pydantic import Field
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.deps import CurrentIdentity, CurrentUser
from api.openapi import ErrorBody
from chat_gateway import Gateway, SessionInfo, SessionSummary
from switchboard.conversation import MAX_MESSAGE_CHARS, SessionState
from switchboard.errors import ServiceError
from switchboard.identity import Identity
from switchboard.models import Model

__all__ = ["ChatGateway", "chat_gateway", "router"]


PING_SECONDS = 15
"""Keep-alive comments so proxies do not close an idle stream."""

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No credentials, or ones that do not verify.", "model": ErrorBody},
    404: {"description": "No such session, or not yours.", "model": ErrorBody},
    409: {"description": "The session is closed.", "model": ErrorBody},
    503: {"description": "Temporal or the workers are not answering.", "model": ErrorBody},
}


@asynccontextmanager
async def _gateway_lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Runs inside the app's lifespan, after it made the Temporal client and service.
    gateway = Gateway(app.state.temporal_client, app.state.settings, app.state.task_service)
    app.state.gateway = gateway
    try:
        yield
    finally:
        await gateway.aclose()


router = APIRouter(prefix="/v1/sessions", tags=["sessions"], lifespan=_gateway_lifespan)


def chat_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


ChatGateway = Annotated[Gateway, Depends(chat_gateway)]


class SessionCreate(Model):
    repo: str | None = Field(
        default=None, max_length=2000, description="Default repository for delegated tasks."
    )
    title: str = Field(default="", max_length=200)


class SessionsPublic(Model):
    data: list[SessionSummary]
    count: int


class MessageCreate(Model):
    content: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    request_id: str | None = Field(
        default=None, max_length=200, description="Idempotency key: a retry posts once."
    )
    model: str | None = Field(default=None, max_length=200, description="Conversation model.")


class MessageAccepted(Model):
    """The message is durable; its answer streams on the session's events."""

    session_id: str
    turn: int
    offset: int
    duplicate: bool = False


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        429: {"description": "You hold the most open sessions allowed.", "model": ErrorBody},
        **_ERRORS,
    },
)
async def create_session(
    gateway: ChatGateway, user: CurrentUser, body: SessionCreate | None = None
) -> SessionInfo:
    """Start a chat session (a durable `ConversationWorkflow`).

    Each user may hold `max_open_sessions_per_user` open sessions (429 past it); a
    session with no message for `session_idle_hours` closes itself, history kept."""
    body = body or SessionCreate()
    return await gateway.create_session(user, repo=body.repo, title=body.title)


@router.get("", responses=_ERRORS)
async def list_sessions(
    gateway: ChatGateway, user: CurrentUser, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> SessionsPublic:
    """The caller's open sessions (from Temporal visibility)."""
    data = await gateway.sessions(user, limit)
    return SessionsPublic(data=data, count=len(data))


@router.get("/{session_id}", responses=_ERRORS)
async def get_session(session_id: str, gateway: ChatGateway, user: CurrentUser) -> SessionState:
    """The session's state: its tasks, open turns and offsets."""
    return await gateway.state(session_id, user)


@router.delete("/{session_id}", responses=_ERRORS)
async def close_session(session_id: str, gateway: ChatGateway, user: CurrentUser) -> SessionState:
    """Close the session (its tasks keep running; decide them at /v1/tasks)."""
    return await gateway.close_session(session_id, user)


@router.post("/{session_id}/messages", status_code=status.HTTP_202_ACCEPTED, responses=_ERRORS)
async def post_message(
    session_id: str, body: MessageCreate, gateway: ChatGateway, caller: CurrentIdentity
) -> MessageAccepted:
    """Say something. Returns once the message is durable (~10 ms); the answer streams
    on `GET /v1/sessions/{id}/events`."""
    result = await gateway.post(
        session_id, caller, body.content, model=body.model, request_id=body.request_id
    )
    return MessageAccepted(
        session_id=session_id,
        turn=result.turn,
        offset=result.stamp.first_offset,
        duplicate=result.duplicate,
    )


@router.get(
    "/{session_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "Server-sent events: entry (with `id:` = offset), token, draft, "
            "task, turn, ready.",
            "content": {"text/event-stream": {}},
        },
        **_ERRORS,
    },
)
async def stream_events(
    session_id: str,
    gateway: ChatGateway,
    caller: CurrentIdentity,
    from_offset: Annotated[int, Query(alias="from", ge=0, description="First offset to send.")] = 0,
    last_event_id: Annotated[
        str | None, Header(description="Resume after this offset (EventSource sends it).")
    ] = None,
) -> EventSourceResponse:
    """The session's stream; reconnect with `Last-Event-ID` to lose nothing."""
    start = _resume_point(from_offset, last_event_id)
    await gateway.open(session_id, caller)  # refuse before the 200 goes out
    return EventSourceResponse(_sse(gateway, session_id, caller, start), ping=PING_SECONDS)


async def _sse(
    gateway: Gateway, session_id: str, caller: Identity, start: int
) -> AsyncIterator[ServerSentEvent]:
    try:
        async for item in gateway.stream(session_id, caller, start):
            yield ServerSentEvent(
                data=json.dumps(item.data, ensure_ascii=False),
                event=item.event,
                id=str(item.id) if item.id is not None else None,
            )
    except ServiceError as exc:
        # Headers are sent already: say it in-band; the client reconnects from its offset.
        yield ServerSentEvent(data=json.dumps({"detail": str(exc)}), event="error")


def _resume_point(from_offset: int, last_event_id: str | None) -> int:
    if last_event_id is None or not last_event_id.strip():
        return from_offset
    if not last_event_id.strip().isdigit():
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"Last-Event-ID must be an entry offset (a number), got {last_event_id!r}",
        )
    return int(last_event_id) + 1
