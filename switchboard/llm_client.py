"""The one way to build an OpenAI client and to turn chat messages into OpenAI's shape.

Used by the model-calling activities and by the conversation gateway. Never
imported by workflow code (it imports `openai`, which is slow to load in the
workflow sandbox). A client costs nothing until its first call; make one per
process and part (it holds a connection pool) and close it on shutdown.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final, cast

import openai
from openai.types.chat import ChatCompletionMessageParam

from switchboard.contracts import ChatMessage, ChatToolCall
from switchboard.settings import Settings

__all__ = [
    "ACTIVITY_RETRIES",
    "GATEWAY_RETRIES",
    "chat_messages",
    "openai_client",
    "openai_message",
    "to_openai",
]

ACTIVITY_RETRIES: Final = 0
"""Activities never retry in the client: Temporal's retry policy is the one place
retries happen, so they are visible in history and bounded by the workflow."""
GATEWAY_RETRIES: Final = 2
"""The gateway has no Temporal retry around a model call, so the client retries."""
SCRIPTED_API_KEY: Final = "scripted"
"""Sent when no key is configured (the scripted model ignores it)."""


def openai_client(settings: Settings, *, max_retries: int) -> openai.AsyncOpenAI:
    """A client for the configured model server (`SWITCHBOARD_LLM_*`), else the scripted one.

    Args:
        settings: Base URL, API key and timeout.
        max_retries: `ACTIVITY_RETRIES` or `GATEWAY_RETRIES` (see there why).
    """
    api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else SCRIPTED_API_KEY
    return openai.AsyncOpenAI(
        base_url=settings.model_base_url,
        api_key=api_key,
        timeout=settings.llm_timeout_seconds,
        max_retries=max_retries,
    )


def openai_message(
    role: str,
    content: str | None,
    *,
    tool_calls: Sequence[ChatToolCall] = (),
    tool_call_id: str | None = None,
) -> dict[str, Any]:
    """One entry of OpenAI's `messages` (an assistant's `content` is passed as given:
    None is how OpenAI spells "only tool calls")."""
    if role == "tool":
        return {"role": "tool", "tool_call_id": tool_call_id or "", "content": content or ""}
    if role == "assistant":
        body: dict[str, Any] = {"role": "assistant", "content": content}
        if tool_calls:
            body["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in tool_calls
            ]
        return body
    return {"role": role, "content": content or ""}


def to_openai(message: ChatMessage) -> dict[str, Any]:
    return openai_message(
        message.role,
        message.content,
        tool_calls=message.tool_calls,
        tool_call_id=message.tool_call_id,
    )


def chat_messages(messages: Iterable[dict[str, Any]]) -> list[ChatCompletionMessageParam]:
    """The `messages` argument of `chat.completions.create` (the dicts are its shape)."""
    return cast(list[ChatCompletionMessageParam], list(messages))
