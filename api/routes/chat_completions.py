"""OpenAI-compatible `POST /v1/chat/completions`: any chat client can use Switchboard
as its model.

The conversation lives in the session, not in the request: Switchboard answers
the last user message of `messages` and keeps its own history (so a client that
resends the whole history does not duplicate it). The session is the header
`X-Switchboard-Session`, else one per caller and frontend conversation (its
`chat_id`/`metadata` id, else the `user` field, else its first user message:
`switchboard.frontends.conversation_key`), made on first use. Task updates since
the previous answer open the next answer, so a client that only sees answers
still hears about approvals and merges. `model` is one of `GET /v1/models`,
mapped to a configured upstream model. A frontend's own background requests
(titles, tags, ...) are answered by the model directly, outside any session.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Header, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.deps import AppSettings, CurrentIdentity
from api.errors import status_for
from api.frontend import (
    PlainModel,
    Refusal,
    advisory,
    background_answer,
    check_params,
    frontend_session,
    is_background,
    upstream_model,
)
from api.openai_errors import openai_error, openai_responses
from api.progress import before_answer, with_progress
from api.routes.sessions import ChatGateway
from chat_gateway import ModelCallFailed, ModelError
from switchboard.conversation import MAX_MESSAGE_CHARS
from switchboard.errors import InvalidRequest, ServiceError
from switchboard.identity import Identity

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["openai"])

SESSION_HEADER = "X-Switchboard-Session"
REPO_HEADER = "X-Switchboard-Repo"
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
    """The fields read. Of the rest of OpenAI's request, those that would change the
    answer's shape (`tools`, `n`, `response_format`, ...) are refused with a 400;
    sampling hints are accepted, checked for range, and named in the
    `X-Switchboard-Ignored` header (the conversation model's sampling is Switchboard's)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [{"model": "switchboard", "messages": [{"role": "user", "content": "hi"}]}]
        },
    )

    model: str = Field(min_length=1, max_length=200, examples=["switchboard"])
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=10_000)
    stream: bool = False
    user: str | None = Field(default=None, max_length=200)
    stream_options: dict[str, Any] | None = None

    def question(self) -> str:
        """The message to answer: the last user message."""
        return next((m.text() for m in reversed(self.messages) if m.role == "user"), "")

    def first_question(self) -> str:
        """The conversation's first user message (the same each turn a frontend replays)."""
        return next((m.text() for m in self.messages if m.role == "user"), "")

    @model_validator(mode="after")
    def _question_fits(self) -> ChatCompletionRequest:
        length = len(self.question())
        if length > MAX_MESSAGE_CHARS:
            raise ValueError(
                f"the last user message has {length} characters; the limit is "
                f"{MAX_MESSAGE_CHARS}: send a shorter message"
            )
        return self


REFUSED: Final = {
    "n": "Switchboard writes one answer per message; send n=1 or leave it out",
    "tools": "the conversation uses Switchboard's own tools (delegate, approve, ...) and "
    "cannot call a client's functions; leave tools out",
    "functions": "the conversation cannot call a client's functions; leave functions out",
    "tool_choice": "there are no client tools to choose from; leave tool_choice out",
    "function_call": "there are no client functions to call; leave function_call out",
    "response_format": "the answer is plain text (no json_object or json_schema output); "
    "leave response_format out or use {'type': 'text'}",
    "logprobs": "the answer carries no log probabilities",
    "top_logprobs": "the answer carries no log probabilities",
    "audio": "the answer is text only",
    "modalities": "the answer is text only",
    "prediction": "predicted outputs are not supported",
}
"""Parameters that would change what the client gets back: refused with a 400 naming
them unless their value asks for nothing more than one text answer."""


@router.post(
    "/chat/completions",
    response_model=None,
    responses={
        200: {
            "description": "A chat completion, or its SSE chunks with `stream: true` (a model "
            "failure after the first chunk arrives as an `error` chunk, then the stream ends).",
            "content": {"text/event-stream": {}},
        },
        **openai_responses(
            _400="No user message, a parameter Switchboard does not support or a value out "
            "of range (`param` names it), a body that cannot be parsed, or the model "
            "refused the request.",
            _404="The model is not offered (`model_not_found`), or the session in "
            "X-Switchboard-Session is not yours.",
            _409="The session is closed.",
            _429="The model is rate limited, or too many open sessions.",
            _502="The conversation model failed.",
            _503="The model, Temporal or the workers are not answering.",
            _504="The conversation model timed out.",
        ),
    },
)
async def chat_completions(
    body: ChatCompletionRequest,
    gateway: ChatGateway,
    caller: CurrentIdentity,
    settings: AppSettings,
    llm: PlainModel,
    x_switchboard_session: Annotated[str | None, Header(max_length=100)] = None,
    x_switchboard_repo: Annotated[str | None, Header(max_length=2000)] = None,
    x_openwebui_chat_id: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """Answer the last user message in the caller's session (a frontend's own
    background request, such as a title, outside any session).

    Every error is OpenAI's `{"error": {...}}`, so the `openai` client raises the
    matching exception."""
    try:
        fields = body.model_dump(exclude_unset=True)
        check_params(fields, REFUSED)
        upstream = upstream_model(settings, body.model)
        question = body.question()
        if not question.strip():
            raise InvalidRequest("messages hold no user message to answer")
        headers = advisory(fields)
        messages = [(m.role, m.text()) for m in body.messages]
        if is_background(messages, settings.background_markers):
            text = await background_answer(llm, upstream, messages)
            return _reply(body, question, _once(text), text, headers)
        ids = _conversation_ids(fields, x_openwebui_chat_id)
        session_id = await frontend_session(
            gateway,
            caller,
            header_session=x_switchboard_session,
            repo=x_switchboard_repo,
            user_field=body.user,
            ids=ids,
            first_user_message=body.first_question(),
        )
        headers[SESSION_HEADER] = session_id
        progress = settings.openai_stream_progress_seconds if body.stream else 0.0
        return await _answer(body, gateway, caller, session_id, upstream, headers, progress)
    except Refusal as exc:
        return exc.response()
    except ModelCallFailed as exc:
        return _error_response(exc.error, {})
    except ServiceError as exc:
        return openai_error(status_for(exc), str(exc), error_code=type(exc).__name__)


def _conversation_ids(fields: dict[str, Any], chat_id_header: str | None) -> dict[str, object]:
    metadata = fields.get("metadata")
    ids: dict[str, object] = dict(metadata) if isinstance(metadata, dict) else {}
    ids.update({k: v for k, v in fields.items() if k != "metadata"})
    if chat_id_header:
        ids.setdefault("chat_id", chat_id_header)
    return ids


async def _answer(
    body: ChatCompletionRequest,
    gateway: ChatGateway,
    caller: Identity,
    session_id: str,
    upstream: str,
    headers: dict[str, str],
    progress: float,
) -> Response:
    question = body.question()
    before = await before_answer(gateway, session_id, caller) if progress > 0 else None
    answer = gateway.ask(session_id, caller, question, model=upstream)
    try:
        # Wait for the first piece before answering, so a model that fails at once
        # gets its own status rather than a 200 stream that carries the error.
        first = await anext(answer, "")
        text = ""
        if not body.stream:
            text = first + "".join([piece async for piece in answer])
    except ModelCallFailed as exc:
        return _error_response(exc.error, headers)
    pieces = _prepend(first, answer)
    if before is not None:
        pieces = with_progress(pieces, gateway, session_id, caller, before=before, seconds=progress)
    return _reply(body, question, pieces, text, headers)


def _reply(
    body: ChatCompletionRequest,
    question: str,
    pieces: AsyncIterator[str],
    text: str,
    headers: dict[str, str],
) -> Response:
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    if body.stream:
        usage = bool((body.stream_options or {}).get("include_usage"))
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


async def _once(text: str) -> AsyncIterator[str]:
    yield text


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
