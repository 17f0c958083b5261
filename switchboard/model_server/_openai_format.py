"""The OpenAI chat completion wire format: whole responses and stream chunks.

Shapes follow what api.openai.com sends: one role chunk, content or tool call
deltas (a tool call's id, type and name first, its arguments in later
fragments), a finish chunk, an optional usage chunk with no choices, then
`data: [DONE]`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from switchboard.model_server._script import Reply, message_text

CHARS_PER_TOKEN = 4


def approx_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    chars = 0
    for message in messages:
        chars += len(message_text(message))
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                chars += len(str(function.get("name", "")))
                chars += len(str(function.get("arguments", "")))
    return approx_tokens(chars)


def completion_tokens(reply: Reply) -> int:
    chars = len(reply.content or "")
    chars += sum(len(call.name) + len(call.arguments) for call in reply.tool_calls)
    return approx_tokens(chars)


def finish_reason(reply: Reply) -> str:
    return "tool_calls" if reply.tool_calls else "stop"


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_body(
    reply: Reply, *, completion_id: str, created: int, model: str, usage_: dict[str, int]
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in reply.tool_calls
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_scripted",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(reply),
            }
        ],
        "usage": usage_,
    }


def stream_chunks(
    reply: Reply,
    *,
    completion_id: str,
    created: int,
    model: str,
    usage_: dict[str, int] | None,
) -> Iterator[tuple[dict[str, Any], int]]:
    """Chunk payloads with the number of tokens each one stands for (for pacing).

    With `usage_` (the client asked `stream_options.include_usage`), every chunk
    carries `"usage": null` and a last chunk with no choices carries the counts.
    """

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_scripted",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage_ is not None:
            body["usage"] = None
        return body

    yield chunk({"role": "assistant", "content": "", "refusal": None}), 0
    for piece in _pieces(reply.content or ""):
        yield chunk({"content": piece}), 1
    for index, call in enumerate(reply.tool_calls):
        head = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        yield chunk({"tool_calls": [head]}), 1
        for piece in _pieces(call.arguments):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}), 1
    yield chunk({}, finish_reason(reply)), 0
    if usage_ is not None:
        final = chunk({})
        final["choices"] = []
        final["usage"] = usage_
        yield final, 0


def sse(payload: Mapping[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


SSE_DONE = b"data: [DONE]\n\n"


def error_body(message: str, *, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _pieces(text: str) -> Iterator[str]:
    # One piece per approximate token, as a model streams them.
    for start in range(0, len(text), CHARS_PER_TOKEN):
        yield text[start : start + CHARS_PER_TOKEN]
