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

from fastapi import APIRouter, Header, HTTPException, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import CurrentUser
from api.routes.sessions import ChatGateway
from switchboard.conversation import MAX_MESSAGE_CHARS
from switchboard.errors import ServiceError

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


@router.post(
    "/chat/completions",
    response_model=None,
    responses={
        200: {"description": "A chat completion, or its SSE chunks with `stream: true`."},
        400: {"description": "No user message to answer."},
        404: {"description": "The session in X-Switchboard-Session is not yours."},
    },
)
async def chat_completions(
    body: ChatCompletionRequest,
    gateway: ChatGateway,
    user: CurrentUser,
    x_switchboard_session: Annotated[str | None, Header(max_length=100)] = None,
    x_switchboard_repo: Annotated[str | None, Header(max_length=2000)] = None,
) -> Response:
    """Answer the last user message in the caller's session."""
    question = next((m.text() for m in reversed(body.messages) if m.role == "user"), "")
    if not question.strip():
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "messages hold no user message to answer")
    if len(question) > MAX_MESSAGE_CHARS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"the last user message has {len(question)} characters; the limit is "
            f"{MAX_MESSAGE_CHARS}: send a shorter message",
        )
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
    if body.stream:
        usage = bool((body.stream_options or {}).get("include_usage"))
        chunks = _chunks(answer, completion_id, created, body.model, question, usage)
        return StreamingResponse(chunks, media_type="text/event-stream", headers=headers)
    text = "".join([piece async for piece in answer])
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
    except ServiceError as exc:
        error = {"error": {"message": str(exc), "type": "server_error", "code": None}}
        yield f"data: {json.dumps(error)}\n\n".encode()
        return
    yield chunk({}, "stop")
    if include_usage:
        final = json.loads(chunk({})[len(b"data: ") :])
        final["choices"] = []
        final["usage"] = _usage(question, "".join(text))
        yield f"data: {json.dumps(final)}\n\n".encode()
    yield b"data: [DONE]\n\n"


def _usage(question: str, answer: str) -> dict[str, int]:
    # Approximate, like the scripted model: the real model's usage is per step, not per answer.
    prompt = -(-len(question) // CHARS_PER_TOKEN)
    completion = -(-len(answer) // CHARS_PER_TOKEN)
    total = prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
