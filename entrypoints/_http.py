"""What every HTTP client of the Switchboard API here shares: the connection as one
user, the error text of a failed response, and the server-sent events of a stream.

`SessionClient` (the chat's client) and `ApiTasks` (the CLI's task commands) both
build on `ApiConnection`; each maps a failed response to its own error type.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import httpx

from entrypoints._cli_auth import LOGIN_HINT, resolve_token

__all__ = ["USER_HEADER", "ApiConnection", "ServerEvent", "error_detail", "server_events"]

USER_HEADER = "X-Switchboard-User"
"""Who the caller is in local mode (an API with sign-in ignores it)."""


class ApiConnection:
    """One API at `base_url`, as one user.

    Args:
        base_url: The API, e.g. `http://127.0.0.1:8000`.
        user: Sent as `X-Switchboard-User`, which only a local-mode API heeds.
        token: Sent as `Authorization: Bearer`; default `SWITCHBOARD_TOKEN`, else the
            token `switchboard login` stored.
        timeout: Per request (streams are not timed out while they flow).
    """

    def __init__(
        self, base_url: str, user: str, *, token: str | None = None, timeout: float = 30.0
    ) -> None:
        self.base_url = base_url
        self.user = user
        headers = {USER_HEADER: user}
        token = resolve_token(token)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=httpx.Timeout(timeout, read=None)
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()


def error_detail(response: httpx.Response) -> str:
    """The API's `detail` of a failed response (else its status and the start of its
    body); a 401 says how to sign in."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    text = str(detail or f"HTTP {response.status_code}: {response.text[:300]}")
    if response.status_code == 401 and "switchboard login" not in text:
        text = f"{text}: {LOGIN_HINT}"
    return text


@dataclass
class ServerEvent:
    event: str = "message"
    id: str | None = None
    data: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.data)


async def server_events(response: httpx.Response) -> AsyncIterator[ServerEvent]:
    """Each server-sent event with data of a `text/event-stream` response (comments and
    empty events skipped)."""
    current = ServerEvent()
    async for line in response.aiter_lines():
        if line == "":
            if current.data:
                yield current
            current = ServerEvent()
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                current.data.append(value)
            elif name == "event":
                current.event = value
            elif name == "id":
                current.id = value
