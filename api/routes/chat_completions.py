"""OpenAI-compatible `POST /v1/chat/completions`: any chat client can use Switchboard
as its model.

The conversation lives in the session, not in the request: Switchboard answers
the last user message of `messages` and keeps its own history (so a client that
resends the whole history does not duplicate it). The session is the header
`X-Switchboard-Session`, else one per caller and `user` field (made on first
use). Task updates since the previous answer open the next answer, so a client
that only sees answers still hears about approvals and merges. `model` picks
the conversation model (`switchboard` means the configured one).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.deps import CurrentUser
from api.errors import status_for
from api.routes.sessions import ChatGateway
from chat_gateway import ModelCallFailed, ModelError
from switchboard.conversation import MAX_MESSAGE_CHARS
from switchboard.errors import InvalidRequest, ServiceError

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["openai"])

SESSION_HEADER = "X-Switchboard-Session"
REPO_HEADER = "X-Switchboard-Repo"
DEFAULT_MODEL = "switchboard"
CHARS_PER_TOKEN = 4


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[_Part] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class ChatCompletionRequest(BaseModel):
    """The fields read; the rest of OpenAI's request (temperature, tools, ...) is ignored:
    the conversation model's parameters are Switchboard's."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=10_000)
    stream: bool = False
    user: str | None = Field(default=None, max_length=200)
    stream_options: dict[str, Any] | None = None

    def question(self) -> str:
        """The message to answer: the last user message."""
        return next((m.text() for m in reversed(self.messages) if m.role == "user"), "")

    @model_validator(mode="after")
    def _question_fits(self) -> ChatCompletionRequest:
        length = len(self.question())
        if length > MAX_MESSAGE_CHARS:
            raise ValueError(
                f"the last user message has {length} characters; the limit is "
                f"{MAX_MESSAGE_CHARS}: send a shorter message"
            )
        return self


class OpenAIError(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class OpenAIErrorBody(BaseModel):
    """OpenAI's error shape: the `openai` client raises the matching exception."""

    error: OpenAIError


def _model_failure(description: str) -> dict[str, Any]:
    return {"description": description, "model": OpenAIErrorBody}


@router.post(
    "/chat/completions",
    response_model=None,
    responses={
        200: {
            "description": "A chat completion, or its SSE chunks with `stream: true` (a model "
            "failure after the first chunk arrives as an `error` chunk, then the stream ends).",
            "content": {"text/event-stream": {}},
        },
        400: {
            "description": "No user message, or the model refused the request (OpenAI's "
            "`error` shape), or a body that cannot be parsed (`detail`)."
        },
        404: _model_failure("The session in X-Switchboard-Session is not yours."),
        409: _model_failure("The session is closed."),
        429: _model_failure("The model is rate limited, or too many open sessions."),
        502: _model_failure("The conversation model failed."),
        503: _model_failure("The model, Temporal or the workers are not answering."),
        504: _model_failure("The conversation model timed out."),
    },
)
async def chat_completions(
    body: ChatCompletionRequest,
    gateway: ChatGateway,
    user: CurrentUser,
    x_switchboard_session: Annotated[str | None, Header(max_length=100)] = None,
    x_switchboard_repo: Annotated[str | None, Header(max_length=2000)] = None,
) -> Response:
    """Answer the last user message in the caller's session.

    Every error past request validation is OpenAI's `{"error": {...}}`, so the
    `openai` client raises the matching exception."""
    try:
        return await _complete(body, gateway, user, x_switchboard_session, x_switchboard_repo)
    except ModelCallFailed as exc:
        return _error_response(exc.error, {})
    except ServiceError as exc:
        code = status_for(exc)
        kind = "invalid_request_error" if code < 500 else "server_error"
        error = ModelError(message=str(exc)[:2000], type=kind, code=type(exc).__name__, status=code)
        return _error_response(error, {})


async def _complete(
    body: ChatCompletionRequest,
    gateway: ChatGateway,
    user: str,
    x_switchboard_session: str | None,
    x_switchboard_repo: str | None,
) -> Response:
    question = body.question()
    if not question.strip():
        raise InvalidRequest("messages hold no user message to answer")
    if x_switchboard_session is not None:
        session_id = x_switchboard_session
        await gateway.open(session_id, user)
    else:
        key = f"openai:{body.user or 'default'}"
        session_id = await gateway.session_for_key(user, key, repo=x_switchboard_repo)
        await gateway.open(session_id, user)
    model = None if body.model == DEFAULT_MODEL else body.model
    answer = gateway.ask(session_id, user, question, model=model)
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    headers = {SESSION_HEADER: session_id}
    try:
        # Wait for the first piece before answering, so a model that fails at once
        # gets its own status rather than a 200 stream that carries the error.
        first = await anext(answer, "")
        if not body.stream:
            text = first + "".join([piece async for piece in answer])
    except ModelCallFailed as exc:
        return _error_response(exc.error, headers)
    if body.stream:
        usage = bool((body.stream_options or {}).get("include_usage"))
        pieces = _prepend(first, answer)
        chunks = _chunks(pieces, completion_id, created, body.model, question, usage)
        return StreamingResponse(chunks, media_type="text/event-stream", headers=headers)
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(question, text),
        },
        headers=headers,
    )


async def _chunks(
    answer: AsyncIterator[str],
    completion_id: str,
    created: int,
    model: str,
    question: str,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            body["usage"] = None
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()

    yield chunk({"role": "assistant", "content": ""})
    text: list[str] = []
    try:
        async for piece in answer:
            text.append(piece)
            yield chunk({"content": piece})
    except ModelCallFailed as exc:
        yield _error_event(exc.error.message, exc.error.type, exc.error.code)
        return
    except ServiceError as exc:
        yield _error_event(str(exc), "server_error", None)
        return
    yield chunk({}, "stop")
    if include_usage:
        final = json.loads(chunk({})[len(b"data: ") :])
        final["choices"] = []
        final["usage"] = _usage(question, "".join(text))
        yield f"data: {json.dumps(final)}\n\n".encode()
    yield b"data: [DONE]\n\n"


async def _prepend(first: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    if first:
        yield first
    async for piece in rest:
        yield piece


def _error_event(message: str, kind: str, code: str | None) -> bytes:
    # The `openai` client raises `APIError` on a chunk with `error`; the stream then ends.
    error = {"error": {"message": message, "type": kind, "code": code}}
    return f"data: {json.dumps(error)}\n\n".encode()


def _error_response(error: ModelError, headers: dict[str, str]) -> JSONResponse:
    if error.status in (429, 503):
        headers = {**headers, "Retry-After": "5"}
    body = {"error": {"message": error.message, "type": error.type, "code": error.code}}
    return JSONResponse(body, status_code=error.status, headers=headers)


def _usage(question: str, answer: str) -> dict[str, int]:
    # Approximate, like the scripted model: the real model's usage is per step, not per answer.
    prompt = -(-len(question) // CHARS_PER_TOKEN)
    completion = -(-len(answer) // CHARS_PER_TOKEN)
    total = prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
