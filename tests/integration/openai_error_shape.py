"""A schemathesis check (loaded with `SCHEMATHESIS_HOOKS`): every 4xx of the
OpenAI-compatible routes is OpenAI's `{"error": {"message", "type", ...}}`, so an
OpenAI client raises the matching exception and shows the message."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.check
def openai_error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Fail on a 4xx whose body is not OpenAI's error object."""
    if not 400 <= response.status_code < 500:
        return None
    try:
        body = response.json()
    except ValueError as exc:
        raise AssertionError(f"{response.status_code} with a body that is not JSON") from exc
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        raise AssertionError(f"{response.status_code} without OpenAI's error object: {body!r}")
    if not isinstance(error.get("message"), str) or not error["message"]:
        raise AssertionError(f"{response.status_code} error without a message: {error!r}")
    if not isinstance(error.get("type"), str) or not error["type"]:
        raise AssertionError(f"{response.status_code} error without a type: {error!r}")
    return True
