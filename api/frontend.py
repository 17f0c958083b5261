"""What the OpenAI-compatible routes share: the model a client names, the parameters
Switchboard refuses, a frontend's own background requests, and the session a
frontend conversation maps to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final

import openai
from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from api.openai_errors import openai_error
from chat_gateway import Gateway
from switchboard.frontends import conversation_key, is_background
from switchboard.identity import Identity
from switchboard.settings import Settings

__all__ = [
    "IGNORED_HEADER",
    "PlainModel",
    "Refusal",
    "advisory",
    "background_answer",
    "check_params",
    "frontend_session",
    "is_background",
    "upstream_model",
]

IGNORED_HEADER: Final = "X-Switchboard-Ignored"
"""Names the sampling parameters accepted but not applied (never dropped silently)."""

ADVISORY: Final = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "stop",
)
"""Sampling hints: in range they are accepted and named in `X-Switchboard-Ignored`
(the conversation model's sampling is Switchboard's); out of range they are refused."""

_RANGES: Final[dict[str, tuple[float, float]]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
    "max_tokens": (1, 1_000_000),
    "max_completion_tokens": (1, 1_000_000),
    "max_output_tokens": (1, 1_000_000),
}


class Refusal(Exception):
    """A request Switchboard will not answer, as OpenAI's error (status, param, code)."""

    def __init__(self, status: int, message: str, *, param: str | None, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code

    def response(self) -> JSONResponse:
        return openai_error(self.status, str(self), error_code=self.code, param=self.param)


def upstream_model(settings: Settings, public: str) -> str:
    """The configured upstream model behind the `model` a client names.

    Raises:
        Refusal: 404 `model_not_found`, listing the models offered.
    """
    upstream = settings.upstream_model(public)
    if upstream is None:
        offered = ", ".join(settings.public_models)
        raise Refusal(
            404,
            f"The model {public!r} does not exist here; the models offered are: {offered} "
            "(GET /v1/models)",
            param="model",
            code="model_not_found",
        )
    return upstream


def check_params(fields: Mapping[str, Any], refused: Mapping[str, str]) -> None:
    """Refuse what cannot be honoured and sampling values out of range.

    Args:
        fields: The request's fields as sent (unset ones absent).
        refused: Parameter name -> why it is refused, for parameters whose presence
            (with a value other than null/empty) would change what the client expects.

    Raises:
        Refusal: 400 naming the parameter.
    """
    for name, why in refused.items():
        if not _harmless(name, fields.get(name)):
            raise Refusal(
                400, f"{name} is not supported: {why}", param=name, code="unsupported_parameter"
            )
    for name, (low, high) in _RANGES.items():
        value = fields.get(name)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise Refusal(
                400,
                f"{name} must be a number from {low:g} to {high:g}, not {value!r}",
                param=name,
                code="invalid_value",
            )


_HARMLESS: Final[dict[str, tuple[object, ...]]] = {
    "n": (1,),
    "tool_choice": ("none", "auto"),
    "logprobs": (False,),
    "response_format": ({"type": "text"},),
    "text": ({"format": {"type": "text"}},),
    "modalities": (["text"],),
}


def _harmless(name: str, value: object) -> bool:
    """Whether a value asks for nothing beyond a plain text answer."""
    return value in (None, [], {}) or value in _HARMLESS.get(name, ())


def advisory(fields: Mapping[str, Any]) -> dict[str, str]:
    """The `X-Switchboard-Ignored` header for the sampling hints a request sent."""
    sent = [name for name in ADVISORY if fields.get(name) is not None]
    return {IGNORED_HEADER: ",".join(sent)} if sent else {}


def plain_model(request: Request) -> openai.AsyncOpenAI:
    client: openai.AsyncOpenAI = request.app.state.plain_llm
    return client


PlainModel = Annotated[openai.AsyncOpenAI, Depends(plain_model)]


async def background_answer(
    llm: openai.AsyncOpenAI, model: str, messages: Sequence[tuple[str, str]]
) -> str:
    """A frontend's housekeeping request answered as a plain completion: no session,
    no history, no tools (so nothing it quotes can delegate or approve)."""
    chat: list[Any] = [
        {"role": role if role in ("system", "user", "assistant") else "user", "content": text}
        for role, text in messages
    ]
    try:
        completion = await llm.chat.completions.create(model=model, messages=chat)
    except openai.APIStatusError as exc:
        raise Refusal(
            502 if exc.status_code >= 500 else exc.status_code,
            f"the model refused the request: {exc.message}",
            param=None,
            code="model_error",
        ) from exc
    except openai.APIError as exc:
        raise Refusal(502, f"the model failed: {exc}", param=None, code="model_error") from exc
    return completion.choices[0].message.content or "" if completion.choices else ""


async def frontend_session(
    gateway: Gateway,
    caller: Identity,
    *,
    header_session: str | None,
    repo: str | None,
    user_field: str | None,
    ids: Mapping[str, object],
    first_user_message: str,
) -> str:
    """The session a request belongs to (opened here): the `X-Switchboard-Session`
    header, else one per user and frontend conversation (`conversation_key`)."""
    if header_session is not None:
        session_id = header_session
    else:
        key = conversation_key(
            user_field=user_field, ids=ids, first_user_message=first_user_message
        )
        session_id = await gateway.session_for_key(caller.owner, key, repo=repo)
    await gateway.open(session_id, caller)
    return session_id
