"""Errors as JSON `{"detail": "..."}`: what was wrong and how to fix it.

The error family of `switchboard.errors` maps to statuses here, once; routes
just raise its members.
Validation errors keep FastAPI's structured list under `errors` but lead with
one readable sentence in `detail`, the same shape as every other error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from api.openai_errors import is_openai_path, openai_error, openai_validation_error
from chat_gateway import TooManySessions
from switchboard.errors import (
    Forbidden,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    Refused,
    ServiceError,
    ServiceUnavailable,
    Unauthenticated,
    WrongPhase,
)

__all__ = ["install_error_handlers", "status_for", "validation_detail"]

_STATUS: dict[type[ServiceError], int] = {
    Unauthenticated: status.HTTP_401_UNAUTHORIZED,
    Forbidden: status.HTTP_403_FORBIDDEN,
    NotFound: status.HTTP_404_NOT_FOUND,
    InvalidRequest: status.HTTP_400_BAD_REQUEST,
    WrongPhase: status.HTTP_409_CONFLICT,
    # A validator's own reason is the workflow's answer, passed on as a bad gateway
    # like any other refusal Temporal sends back.
    Refused: status.HTTP_502_BAD_GATEWAY,
    ServiceUnavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
    TooManySessions: status.HTTP_429_TOO_MANY_REQUESTS,
    LimitExceeded: status.HTTP_429_TOO_MANY_REQUESTS,
}
"""The first matching class wins; any other `ServiceError` is a 502."""


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    # Unknown routes and methods on the OpenAI surface answer in OpenAI's shape.
    assert isinstance(exc, HTTPException)
    if is_openai_path(request.url.path):
        return openai_error(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def status_for(exc: Exception) -> int:
    """The HTTP status of a service error (502 for one of no known kind)."""
    return next(
        (code for kind, code in _STATUS.items() if isinstance(exc, kind)),
        status.HTTP_502_BAD_GATEWAY,
    )


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    code = status_for(exc)
    headers: dict[str, str] = {}
    if code == status.HTTP_401_UNAUTHORIZED:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, LimitExceeded):
        headers["Retry-After"] = str(exc.retry_after)
    if is_openai_path(request.url.path):
        error_code = (
            "invalid_api_key" if code == status.HTTP_401_UNAUTHORIZED else type(exc).__name__
        )
        return openai_error(code, str(exc), error_code=error_code, headers=headers or None)
    if code == status.HTTP_503_SERVICE_UNAVAILABLE:
        headers["Retry-After"] = "5"
    return JSONResponse({"detail": str(exc)}, status_code=code, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    errors: Sequence[Any] = (
        exc.errors() if isinstance(exc, RequestValidationError | ValidationError) else []
    )
    if is_openai_path(request.url.path):
        return openai_validation_error(errors, validation_detail(errors))
    return JSONResponse(
        {"detail": validation_detail(errors), "errors": _jsonable(errors)},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def validation_detail(errors: Sequence[Any]) -> str:
    """One sentence per problem: `where: what` (`body.goal: ...`)."""
    parts: list[str] = []
    for error in errors:
        kind = error.get("type", "")
        where = ".".join(str(part) for part in error.get("loc", ()))
        if kind == "json_invalid":
            parts.append(f"the body is not valid JSON ({error.get('msg', '')}): send a JSON object")
            continue
        if kind == "missing" and where == "body":
            parts.append("the request needs a JSON body")
            continue
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg")))
    return "; ".join(parts) or "the request is invalid"


def _jsonable(errors: Sequence[Any]) -> list[dict[str, Any]]:
    # `ctx` may hold exception objects that JSON cannot encode.
    return [
        {key: value for key, value in dict(error).items() if key in ("type", "loc", "msg")}
        for error in errors
    ]
