"""A failed conversation-model call, as the session records it and the API reports it.

The turn ends with a notice whose `data["error"]` holds the OpenAI-style error
(`status`, `type`, `code`); the OpenAI-compatible endpoint turns that into an
error response with that status instead of an answer, so a client can tell.
"""

from __future__ import annotations

from typing import Any

import openai
from pydantic import Field

from switchboard.errors import ServiceError
from switchboard.models import Model

__all__ = ["ModelCallFailed", "ModelError", "model_error"]


class ModelError(Model):
    """OpenAI's error object, plus the HTTP status the API answers with."""

    message: str = Field(max_length=2000)
    type: str
    code: str | None = None
    status: int = Field(ge=400, le=599)


class ModelCallFailed(ServiceError):
    """The conversation model did not answer this turn (see `error`)."""

    def __init__(self, error: ModelError) -> None:
        super().__init__(error.message)
        self.error = error

    @classmethod
    def from_entry_data(cls, data: dict[str, Any]) -> ModelCallFailed | None:
        raw = data.get("error")
        if not isinstance(raw, dict):
            return None
        try:
            return cls(ModelError.model_validate(raw))
        except ValueError:
            return None


def model_error(exc: openai.OpenAIError, message: str) -> ModelError:
    """How to report `exc`: rate limits stay 429, a bad model name 400, an unreachable
    model 503, a slow one 504, anything else the model server did 502."""
    if isinstance(exc, openai.APITimeoutError):
        return ModelError(message=message, type="timeout", code="model_timeout", status=504)
    if isinstance(exc, openai.APIConnectionError):
        return ModelError(
            message=message, type="server_error", code="model_unreachable", status=503
        )
    if isinstance(exc, openai.APIStatusError):
        upstream = exc.status_code
        if upstream == 429:
            return ModelError(
                message=message, type="rate_limit_error", code="rate_limit_exceeded", status=429
            )
        if upstream in (400, 404, 422):
            return ModelError(
                message=message, type="invalid_request_error", code="model_refused", status=400
            )
        return ModelError(
            message=message, type="server_error", code=f"model_status_{upstream}", status=502
        )
    return ModelError(message=message, type="server_error", code="model_error", status=502)
