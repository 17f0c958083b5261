"""OpenAI's error shape for the OpenAI-compatible surface (`/v1` outside Switchboard's
own `/v1/sessions` and `/v1/tasks`): `{"error": {message, type, code, param}}`, so
OpenAI clients raise the matching exception and show the message.

Validation errors there are 400 (as OpenAI answers them), naming the parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from fastapi import status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

__all__ = [
    "OpenAIError",
    "OpenAIErrorBody",
    "is_openai_path",
    "openai_error",
    "openai_responses",
    "openai_validation_error",
]

_OWN_PREFIXES: Final = ("/v1/sessions", "/v1/tasks", "/v1/me", "/v1/auth/")

_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class OpenAIError(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class OpenAIErrorBody(BaseModel):
    """OpenAI's error shape: the `openai` client raises the matching exception."""

    error: OpenAIError


def is_openai_path(path: str) -> bool:
    """Whether `path` is on the OpenAI-compatible surface."""
    return path.startswith("/v1/") and not path.startswith(_OWN_PREFIXES)


def openai_error(
    code: int,
    message: str,
    *,
    kind: str | None = None,
    error_code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error response in OpenAI's shape (`kind` defaults from the status)."""
    if code in (429, 503):
        headers = {"Retry-After": "5", **(headers or {})}
    error = OpenAIError(
        message=message[:2000],
        type=kind or _TYPES.get(code, "server_error" if code >= 500 else "invalid_request_error"),
        code=error_code,
        param=param,
    )
    return JSONResponse({"error": error.model_dump()}, status_code=code, headers=headers)


def openai_validation_error(errors: Sequence[Any], detail: str) -> JSONResponse:
    """A refused request body as OpenAI's 400, naming the first bad parameter."""
    param = None
    for error in errors:
        loc = [str(part) for part in error.get("loc", ()) if part != "body"]
        if loc:
            param = ".".join(loc)
            break
    return openai_error(
        status.HTTP_400_BAD_REQUEST, detail, error_code="invalid_request", param=param
    )


def openai_responses(**described: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for statuses answered in OpenAI's shape."""
    return {
        int(code[1:]): {"description": text, "model": OpenAIErrorBody}
        for code, text in described.items()
    }
