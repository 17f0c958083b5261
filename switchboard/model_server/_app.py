"""The FastAPI app: OpenAI-compatible routes plus the admin API for tests.

This is a test double of the *model* only: everything else (the `openai` client,
HTTP, streaming parsers, retries) is the real thing talking to it.

The admin API (`/_scenario`, `/_faults`, `/_config`, `/_reset`, `/_stats`) needs
`Authorization: Bearer <control token>`: the token is given to `create_app` or
generated there (`control_token(app)`); without it 401, with a wrong one 403.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.background import BackgroundTask

from switchboard.model_server import _openai_format as fmt
from switchboard.model_server._scenario import (
    Scenario,
    ScenarioError,
    ScriptedRole,
    builtin_scenario,
    parse_scenario,
)
from switchboard.model_server._script import Reply, ToolCallReply, next_reply, request_context
from switchboard.model_server._state import (
    ConfigUpdate,
    Fault,
    FaultKind,
    ServerConfig,
    ServerState,
)

ROLE_HEADER = "X-Switchboard-Role"
CALL_ID_HEADER = "X-Switchboard-Call-Id"
TASK_HEADER = "X-Switchboard-Task"
SUBAGENT_HEADER = "X-Switchboard-Subagent"

HANG_SECONDS = 3600.0
"""Longer than any sensible client timeout; shutdown or a disconnect ends it sooner."""
_HANG_POLL_SECONDS = 0.2
MODEL_IDS = ("scripted",)


class ChatRequest(BaseModel):
    """The fields of a chat completion request this server reads; others are accepted."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None


def _state(request: Request) -> ServerState:
    return cast(ServerState, request.app.state.model_server)


StateDep = Annotated[ServerState, Depends(_state)]


def _require_control_token(request: Request) -> None:
    expected = control_token(request.app)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "the control endpoints need Authorization: Bearer <control token> "
            "(printed by the server at start)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not secrets.compare_digest(given.strip().encode(), expected.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong control token")


openai_router = APIRouter(prefix="/v1", tags=["openai"])
admin_router = APIRouter(tags=["admin"], dependencies=[Depends(_require_control_token)])


def _error(
    status: int,
    message: str,
    type_: str,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        fmt.error_body(message, type_=type_, code=code), status_code=status, headers=headers
    )


@openai_router.get("/models")
async def list_models() -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": model, "object": "model", "created": 0, "owned_by": "switchboard"}
            for model in MODEL_IDS
        ],
    }


@openai_router.post("/chat/completions", response_model=None)
async def chat_completions(request: Request, state: StateDep) -> Response:
    try:
        body = ChatRequest.model_validate(await request.json())
    except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as exc:
        return _error(400, f"invalid chat completion request: {exc}", "invalid_request_error")
    headers = request.headers
    try:
        role = ScriptedRole(headers.get(ROLE_HEADER, ScriptedRole.CONVERSATION.value))
    except ValueError:
        known = ", ".join(r.value for r in ScriptedRole)
        return _error(
            400,
            f"unknown {ROLE_HEADER} {headers[ROLE_HEADER]!r}; one of: {known}",
            "invalid_request_error",
        )
    try:
        subagent = int(headers.get(SUBAGENT_HEADER, "0"))
    except ValueError:
        return _error(400, f"{SUBAGENT_HEADER} must be an integer", "invalid_request_error")
    call_id = headers.get(CALL_ID_HEADER)

    state.record_request(role, call_id)
    try:
        response = await _reply(request, state, body, role, subagent, call_id)
    except BaseException:  # the caller went away during the latency
        state.record_closed()
        raise
    if isinstance(response, JSONResponse):
        # In flight until the reply has been sent whole, not just produced.
        response.background = BackgroundTask(state.record_closed)
    else:
        state.record_closed()
    return response


async def _reply(
    request: Request,
    state: ServerState,
    body: ChatRequest,
    role: ScriptedRole,
    subagent: int,
    call_id: str | None,
) -> Response:
    headers = request.headers
    context = request_context(
        role, body.messages, subagent=subagent, task=headers.get(TASK_HEADER, "")
    )
    reply = next_reply(state.scenario, context)

    fault = state.take_fault(role, has_tool_calls=bool(reply.tool_calls))
    if fault is not None:
        faulted = await _inject(fault, reply, request, state)
        if isinstance(faulted, Response):
            return faulted
        reply = faulted

    config = state.config
    latency_ms = config.latency_for(role)
    if latency_ms:
        await asyncio.sleep(latency_ms / 1000)
    prompt = fmt.prompt_tokens(body.messages)
    completion = fmt.completion_tokens(reply)
    usage = fmt.usage(prompt, completion)
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    state.record_answer(call_id)

    if not body.stream:
        if config.token_rate:
            await asyncio.sleep(completion / config.token_rate)
        return JSONResponse(
            fmt.completion_body(
                reply,
                completion_id=completion_id,
                created=created,
                model=body.model,
                usage_=usage,
            )
        )
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    events = _paced_stream(
        reply,
        token_rate=config.token_rate,
        completion_id=completion_id,
        created=created,
        model=body.model,
        usage=usage if include_usage else None,
    )
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


async def _inject(
    fault: FaultKind, reply: Reply, request: Request, state: ServerState
) -> Response | Reply:
    """The injected fault's error response, or the reply it mangles."""
    if fault is FaultKind.HTTP_429:
        return _error(
            429,
            "Rate limit reached (injected fault).",
            "requests",
            "rate_limit_exceeded",
            headers={"Retry-After": "1"},
        )
    if fault is FaultKind.HTTP_500:
        return _error(500, "The server had an error (injected fault).", "server_error")
    if fault is FaultKind.HTTP_401:
        return _error(
            401,
            "Incorrect API key provided (injected fault).",
            "invalid_request_error",
            "invalid_api_key",
        )
    if fault is FaultKind.HANG:
        await _hang(request, state)
        return _error(503, "The scripted model is shutting down.", "server_error")
    if fault is FaultKind.MALFORMED_TOOL_JSON:
        return Reply(
            content=reply.content,
            tool_calls=[
                ToolCallReply(id=c.id, name=c.name, arguments=_malformed(c.arguments))
                for c in reply.tool_calls
            ],
        )
    return reply


async def _paced_stream(
    reply: Reply,
    *,
    token_rate: float,
    completion_id: str,
    created: int,
    model: str,
    usage: dict[str, int] | None,
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    tokens = 0
    for payload, weight in fmt.stream_chunks(
        reply, completion_id=completion_id, created=created, model=model, usage_=usage
    ):
        tokens += weight
        if token_rate and weight:
            # Pace against the start time, so sleep granularity does not add up.
            delay = started + tokens / token_rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        yield fmt.sse(payload)
    yield fmt.SSE_DONE


async def _hang(request: Request, state: ServerState) -> None:
    deadline = time.monotonic() + HANG_SECONDS
    while time.monotonic() < deadline and not state.stopping.is_set():
        try:
            await asyncio.wait_for(state.stopping.wait(), _HANG_POLL_SECONDS)
        except TimeoutError:
            if await request.is_disconnected():
                return


def _malformed(arguments: str) -> str:
    """Arguments cut off mid-way, as a model that stopped early would send them."""
    broken = arguments[: len(arguments) // 2]
    try:
        json.loads(broken)
    except ValueError:
        return broken or '{"'
    return broken + '{"'


# ---- admin API -----------------------------------------------------------------


@admin_router.get("/_stats")
async def get_stats(state: StateDep) -> dict[str, Any]:
    return state.stats()


@admin_router.get("/_scenario")
async def get_scenario(state: StateDep) -> dict[str, Any]:
    return state.scenario.model_dump(mode="json")


@admin_router.post("/_scenario", response_model=None)
async def set_scenario(request: Request, state: StateDep) -> JSONResponse:
    try:
        scenario = parse_scenario(await request.json(), source="the posted scenario")
    except json.JSONDecodeError as exc:
        return JSONResponse({"detail": f"the body is not JSON: {exc}"}, status_code=400)
    except ScenarioError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=400)
    state.scenario = scenario
    return JSONResponse({"name": scenario.name, "roles": sorted(scenario.roles)})


@admin_router.post("/_faults")
async def add_faults(faults: Fault | list[Fault], state: StateDep) -> dict[str, Any]:
    state.add_faults(faults if isinstance(faults, list) else [faults])
    return {"pending_faults": [fault.model_dump(mode="json") for fault in state.faults]}


@admin_router.post("/_reset")
async def reset(state: StateDep) -> dict[str, Any]:
    state.reset()
    return state.stats()


@admin_router.get("/_config")
async def get_config(state: StateDep) -> ServerConfig:
    return state.config


@admin_router.post("/_config")
async def set_config(update: ConfigUpdate, state: StateDep) -> ServerConfig:
    state.config = state.config.model_copy(update=update.model_dump(exclude_none=True))
    return state.config


def create_app(
    scenario: Scenario | None = None,
    *,
    latency_ms: int = 0,
    token_rate: float = 0,
    control_token: str | None = None,
) -> FastAPI:
    """The scripted model as an ASGI app (the built-in demo scenario by default).

    Args:
        scenario: What to play.
        latency_ms: Delay before each reply.
        token_rate: Streamed tokens per second (0: unpaced).
        control_token: What the admin API requires; generated when omitted.
    """
    state = ServerState(
        scenario or builtin_scenario("demo"),
        ServerConfig(latency_ms=latency_ms, token_rate=token_rate),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A fresh event per run: an app object may be served more than once.
        state.stopping = asyncio.Event()
        yield
        state.stopping.set()

    app = FastAPI(title="Switchboard scripted model", lifespan=lifespan)
    app.state.model_server = state
    app.state.control_token = control_token or secrets.token_urlsafe(24)
    app.include_router(openai_router)
    app.include_router(admin_router)
    return app


def server_state(app: FastAPI) -> ServerState:
    """The state behind an app made by `create_app` (for the server runner)."""
    return cast(ServerState, app.state.model_server)


def control_token(app: FastAPI) -> str:
    """The token the admin API of an app made by `create_app` requires."""
    token: str = app.state.control_token
    return token
