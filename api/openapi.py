"""The OpenAPI document made to match what the API really answers.

- Validation errors (422) are `{"detail": "<one sentence>", "errors": [...]}`
  (see `api.errors`), not FastAPI's default `{"detail": [...]}`: the document
  says so. The OpenAI surface (`api.openai_errors`) answers them as OpenAI's
  400 instead, and its operations document no 422.
- Every operation may answer 400 (a body that cannot be parsed), 413 (body too
  large, `api.middleware.BodyLimit`), 502 (Temporal refused a call) and 503
  (Temporal or the workers not answering), all as `{"detail": "..."}`.
- A 405 lists in `Allow` every method the document gives the path, across all
  its routes (Starlette lists only the first route's).
"""

from __future__ import annotations

import functools
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from api.openai_errors import is_openai_path, openai_error

__all__ = ["COMMON_RESPONSES", "ErrorBody", "install_openapi"]


class ErrorBody(BaseModel):
    """Every error but the OpenAI endpoint's model failures: what was wrong, how to fix it."""

    detail: str


class ValidationIssue(BaseModel):
    type: str
    loc: list[str | int]
    msg: str


class ValidationErrorBody(BaseModel):
    """A refused request: one readable sentence, then each problem."""

    detail: str
    errors: list[ValidationIssue]


COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "The request is malformed (e.g. a body that cannot be parsed)."},
    413: {"description": "The request body is too large.", "model": ErrorBody},
    502: {"description": "Temporal refused the call.", "model": ErrorBody},
    503: {"description": "Temporal or the workers are not answering.", "model": ErrorBody},
}


def install_openapi(app: FastAPI) -> None:
    """Use the true 422 schema and a 405 handler that lists every allowed method."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=app.routes,
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            issue = ValidationIssue.model_json_schema()
            body = ValidationErrorBody.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            body.pop("$defs", None)
            schemas["ValidationIssue"] = issue
            schemas["HTTPValidationError"] = body
            schemas.pop("ValidationError", None)
            _openai_surface_has_no_422(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_exception_handler(405, _method_not_allowed)


def _openai_surface_has_no_422(document: dict[str, Any]) -> None:
    # The OpenAI surface answers a body that does not validate with OpenAI's 400.
    for path, operations in document.get("paths", {}).items():
        if is_openai_path(path):
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)


async def _method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    # The document is the contract: every method it lists for a path matching this one.
    document = request.app.openapi()
    methods = {
        method.upper()
        for template, operations in document.get("paths", {}).items()
        if _template(template).fullmatch(request.url.path)
        for method in operations
    }
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    if methods:
        headers["Allow"] = ", ".join(sorted(methods))
    detail = exc.detail if isinstance(exc, HTTPException) else "Method Not Allowed"
    if is_openai_path(request.url.path):
        return openai_error(405, str(detail), headers=headers or None)
    return JSONResponse({"detail": detail}, status_code=405, headers=headers or None)


@functools.cache
def _template(path: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^/{}]+\})", path)
    return re.compile(
        "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
    )
