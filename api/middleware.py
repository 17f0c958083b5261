"""Plain ASGI middleware (not `BaseHTTPMiddleware`, which buffers and breaks SSE).

- `BodyLimit` refuses request bodies over a size before anything reads them.
- `RequestMetrics` counts requests and times them to the first response byte,
  labelled by route template, so a long event stream counts as fast when it
  starts fast.
"""

from __future__ import annotations

import json
import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.openai_errors import is_openai_path

__all__ = ["MAX_BODY_BYTES", "BodyLimit", "RequestMetrics"]

MAX_BODY_BYTES = 2 * 1024 * 1024
"""Above the largest valid task (24 subtasks of 20k characters) with room to spare."""

REQUESTS = Counter(
    "switchboard_api_requests_total",
    "HTTP requests answered by the API.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "switchboard_api_request_seconds",
    "Seconds from request to the first response byte.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, scope.get("path", ""))
            return
        if declared is not None:
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read up to the limit here, then replay it.
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(send, scope.get("path", ""))
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, path: str) -> None:
        message = f"request body over {self.max_bytes} bytes: send a smaller request"
        shaped: dict[str, object] = {"detail": message}
        if is_openai_path(path):
            shaped = {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "code": "request_too_large",
                    "param": None,
                }
            }
        body = json.dumps(shaped).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope.get("method", "")

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = _route_template(scope)
                LATENCY.labels(method, route).observe(time.perf_counter() - started)
                REQUESTS.labels(method, route, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, timed_send)


def _route_template(scope: Scope) -> str:
    # The template (`/v1/tasks/{task_id}`), not the path, keeps label cardinality bounded.
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
