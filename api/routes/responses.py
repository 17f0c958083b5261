"""OpenAI-compatible `POST /v1/responses` (the Responses API), streaming or not, so
Responses clients (the `openai` client's `responses.create`, the OpenAI Agents SDK
on its default path) work unchanged.

The same conversation as `/v1/chat/completions`: the last user message of
`input` is answered in the caller's session for that conversation
(`previous_response_id` or `conversation` names it; else as for chat
completions). A response's id carries its session, so `previous_response_id`
continues it (only for its owner). Client function `tools` cannot be honoured
(the conversation calls Switchboard's own tools) and get a 400 naming `tools`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Final

from fastapi import APIRouter, Header, Path, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import AppSettings, CurrentIdentity
from api.errors import status_for
from api.frontend import (
    IGNORED_HEADER,
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
from chat_gateway import ModelCallFailed
from switchboard.conversation import MAX_MESSAGE_CHARS
from switchboard.errors import InvalidRequest, ServiceError

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["openai"])

SESSION_HEADER = "X-Switchboard-Session"
CHARS_PER_TOKEN = 4
_BACKGROUND: Final = "bg"

REFUSED: Final = {
    "tools": "the conversation uses Switchboard's own tools (delegate, approve, ...) and "
    "cannot call a client's functions; leave tools out",
    "tool_choice": "there are no client tools to choose from; leave tool_choice out",
    "text": "the answer is plain text (no json_schema output); leave text.format out or "
    "use {'type': 'text'}",
    "background": "background responses are not supported; call without background",
    "prompt": "stored prompt templates are not supported; send input",
    "top_logprobs": "the answer carries no log probabilities",
}


class ResponsesRequest(BaseModel):
    """The fields read; refused and advisory ones are in `REFUSED` and `advisory`."""

    model_config = ConfigDict(
        extra="allow", json_schema_extra={"examples": [{"model": "switchboard", "input": "hi"}]}
    )

    model: str = Field(min_length=1, max_length=200, examples=["switchboard"])
    input: str | list[dict[str, Any]] = Field(max_length=10_000)
    stream: bool = False
    user: str | None = Field(default=None, max_length=200)
    previous_response_id: str | None = Field(default=None, max_length=200)
    conversation: str | dict[str, Any] | None = None
    instructions: str | None = None

    def messages(self) -> list[tuple[str, str]]:
        """`input` as (role, text) pairs.

        Raises:
            Refusal: An item that is not a message (a function call output, ...).
        """
        if isinstance(self.input, str):
            return [("user", self.input)]
        return [_message(index, item) for index, item in enumerate(self.input)]


def _message(index: int, item: dict[str, Any]) -> tuple[str, str]:
    kind = item.get("type", "message")
    role = item.get("role")
    if kind != "message" or role not in ("user", "assistant", "system", "developer"):
        raise Refusal(
            400,
            f"input[{index}] is a {kind!r} item; only messages are supported (no client "
            "function calls)",
            param=f"input[{index}]",
            code="unsupported_parameter",
        )
    content = item.get("content")
    if isinstance(content, list):
        text = "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("input_text", "output_text", "text")
        )
    else:
        text = str(content or "")
    return role, text


@router.post(
    "/responses",
    response_model=None,
    responses={
        200: {
            "description": "A response object, or with `stream: true` its SSE events "
            "(`response.created` ... `response.output_text.delta` ... `response.completed`; "
            "a failure after the start arrives as `error`, then the stream ends).",
            "content": {"text/event-stream": {}},
        },
        **openai_responses(
            _400="No user message, a refused parameter (`param` names it: client `tools`, "
            "non-text `text.format`, a non-message input item), or a value out of range.",
            _404="The model is not offered, or `previous_response_id` is not yours.",
            _409="The session is closed.",
            _429="The model is rate limited, or too many open sessions.",
            _502="The conversation model failed.",
            _503="The model, Temporal or the workers are not answering.",
            _504="The conversation model timed out.",
        ),
    },
)
async def create_response(
    body: ResponsesRequest,
    gateway: ChatGateway,
    caller: CurrentIdentity,
    settings: AppSettings,
    llm: PlainModel,
    x_switchboard_repo: Annotated[str | None, Header(max_length=2000)] = None,
    x_openwebui_chat_id: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """Answer the last user message of `input` in the caller's session (a frontend's
    background request outside any session). Errors are OpenAI's `{"error": ...}`."""
    try:
        fields = body.model_dump(exclude_unset=True)
        check_params(fields, REFUSED)
        upstream = upstream_model(settings, body.model)
        messages = body.messages()
        question = next((text for role, text in reversed(messages) if role == "user"), "")
        if not question.strip():
            raise InvalidRequest("input holds no user message to answer")
        if len(question) > MAX_MESSAGE_CHARS:
            raise Refusal(
                400,
                f"the last user message has {len(question)} characters; the limit is "
                f"{MAX_MESSAGE_CHARS}: send a shorter message",
                param="input",
                code="string_above_max_length",
            )
        headers = _ignored(fields)
        if is_background(messages, settings.background_markers):
            text = await background_answer(llm, upstream, messages)
            return _reply(body, _BACKGROUND, _once(text), text, headers)
        session_id = await frontend_session(
            gateway,
            caller,
            header_session=_session_of(body.previous_response_id),
            repo=x_switchboard_repo,
            user_field=body.user or fields.get("safety_identifier"),
            ids=_conversation_ids(body, fields, x_openwebui_chat_id),
            first_user_message=next((t for r, t in messages if r == "user"), ""),
        )
        headers[SESSION_HEADER] = session_id
        progress = settings.openai_stream_progress_seconds if body.stream else 0.0
        before = await before_answer(gateway, session_id, caller) if progress > 0 else None
        answer = gateway.ask(session_id, caller, question, model=upstream)
        first = await anext(answer, "")
        text = "" if body.stream else first + "".join([piece async for piece in answer])
        pieces = _prepend(first, answer)
        if before is not None:
            pieces = with_progress(
                pieces, gateway, session_id, caller, before=before, seconds=progress
            )
        return _reply(body, session_id, pieces, text, headers)
    except Refusal as exc:
        return exc.response()
    except ModelCallFailed as exc:
        error = exc.error
        return openai_error(error.status, error.message, kind=error.type, error_code=error.code)
    except ServiceError as exc:
        return openai_error(status_for(exc), str(exc), error_code=type(exc).__name__)


@router.get(
    "/responses/{response_id}",
    response_model=None,
    responses=openai_responses(_404="Responses are not stored (`response_not_found`)."),
)
async def get_response(
    caller: CurrentIdentity, response_id: Annotated[str, Path(max_length=200)]
) -> JSONResponse:
    """Always OpenAI's 404: responses are not stored for retrieval. The conversation is
    the session's (continue it with `previous_response_id`; read it at
    `GET /v1/sessions/{id}`)."""
    return openai_error(
        404,
        f"response {response_id!r} is not stored: Switchboard keeps the conversation in "
        "its session, not responses. Continue it with previous_response_id, or read the "
        "session (GET /v1/sessions/{id}, its id is in the X-Switchboard-Session header)",
        error_code="response_not_found",
        param="response_id",
    )


def _ignored(fields: dict[str, Any]) -> dict[str, str]:
    headers = advisory(fields)
    extra = [name for name in ("instructions", "reasoning") if fields.get(name)]
    if extra:
        named = [*filter(None, headers.get(IGNORED_HEADER, "").split(",")), *extra]
        headers[IGNORED_HEADER] = ",".join(named)
    return headers


def _conversation_ids(
    body: ResponsesRequest, fields: dict[str, Any], chat_id_header: str | None
) -> dict[str, object]:
    metadata = fields.get("metadata")
    ids: dict[str, object] = dict(metadata) if isinstance(metadata, dict) else {}
    conversation = body.conversation
    if isinstance(conversation, dict):
        conversation = conversation.get("id")
    if conversation:
        ids["conversation_id"] = str(conversation)
    if chat_id_header:
        ids.setdefault("chat_id", chat_id_header)
    return ids


def _session_of(previous: str | None) -> str | None:
    """The session a previous response belongs to (its id is `resp_<session>_<n>`)."""
    if previous is None:
        return None
    session = previous.removeprefix("resp_").rpartition("_")[0]
    if not previous.startswith("resp_") or not session or session == _BACKGROUND:
        raise Refusal(
            404,
            f"no response {previous!r} to continue: pass the id of a response of yours",
            param="previous_response_id",
            code="not_found",
        )
    return session


def _response_object(
    response_id: str, body: ResponsesRequest, text: str, status: str
) -> dict[str, Any]:
    done = status == "completed"
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    message = {
        "type": "message",
        "id": f"msg_{response_id.removeprefix('resp_')}",
        "status": status,
        "role": "assistant",
        "content": content if done else [],
    }
    prompt = sum(len(t) for _, t in body.messages()) // CHARS_PER_TOKEN + 1
    completion = len(text) // CHARS_PER_TOKEN
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": body.model,
        "output": [message] if done else [],
        "output_text": text,
        "error": None,
        "incomplete_details": None,
        "instructions": body.instructions,
        "metadata": {},
        "parallel_tool_calls": False,
        "temperature": None,
        "top_p": None,
        "tool_choice": "none",
        "tools": [],
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "previous_response_id": body.previous_response_id,
        "store": False,
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        }
        if done
        else None,
    }


def _reply(
    body: ResponsesRequest,
    session: str,
    pieces: AsyncIterator[str],
    text: str,
    headers: dict[str, str],
) -> Response:
    response_id = f"resp_{session}_{uuid.uuid4().hex[:16]}"
    if body.stream:
        events = _events(response_id, body, pieces)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    return JSONResponse(_response_object(response_id, body, text, "completed"), headers=headers)


async def _events(
    response_id: str, body: ResponsesRequest, pieces: AsyncIterator[str]
) -> AsyncIterator[bytes]:
    """The event sequence the `openai` client and the Agents SDK read; an error after
    the start is an `error` event, then the stream ends."""
    sequence = 0

    def event(kind: str, **data: Any) -> bytes:
        nonlocal sequence
        payload = {"type": kind, "sequence_number": sequence, **data}
        sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

    started = _response_object(response_id, body, "", "in_progress")
    item_id = f"msg_{response_id.removeprefix('resp_')}"
    at = {"item_id": item_id, "output_index": 0, "content_index": 0}
    yield event("response.created", response=started)
    yield event("response.in_progress", response=started)
    item = {"type": "message", "id": item_id, "status": "in_progress", "role": "assistant"}
    yield event("response.output_item.added", output_index=0, item={**item, "content": []})
    part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": []}
    yield event("response.content_part.added", **at, part=part)
    text: list[str] = []
    try:
        async for piece in pieces:
            text.append(piece)
            yield event("response.output_text.delta", **at, delta=piece, logprobs=[])
    except ModelCallFailed as exc:
        yield event("error", message=exc.error.message, code=exc.error.code, param=None)
        return
    except ServiceError as exc:
        yield event("error", message=str(exc), code=type(exc).__name__, param=None)
        return
    whole = "".join(text)
    yield event("response.output_text.done", **at, text=whole, logprobs=[])
    yield event("response.content_part.done", **at, part={**part, "text": whole})
    done = _response_object(response_id, body, whole, "completed")
    yield event("response.output_item.done", output_index=0, item=done["output"][0])
    yield event("response.completed", response=done)


async def _once(text: str) -> AsyncIterator[str]:
    yield text


async def _prepend(first: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    if first:
        yield first
    async for piece in rest:
        yield piece
