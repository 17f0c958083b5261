"""Running the scripted model: blocking (`serve`, for the CLI) or in a thread (tests)."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from switchboard.model_server._app import control_token, create_app, server_state
from switchboard.model_server._scenario import Scenario, builtin_scenario, load_scenario
from switchboard.model_server._state import Fault, FaultKind

logger = logging.getLogger(__name__)

CONTROL_TOKEN_ENV = "SWITCHBOARD_MODEL_SERVER_CONTROL_TOKEN"
"""Where `serve` and `ModelServerHandle` read the control token when not given one."""
STARTUP_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 10.0


class _Server(uvicorn.Server):
    """Lets hanging requests go before waiting for connections to drain.

    uvicorn waits for in-flight requests before the app's lifespan shutdown, so
    an injected `hang` would otherwise hold the server open for an hour.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        server_state(self._app).stopping.set()
        await super().shutdown(sockets)


def _config(app: FastAPI, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="on"
    )


def serve(
    host: str,
    port: int,
    scenario_path: Path | None,
    latency_ms: int,
    token_rate: float,
    *,
    token: str | None = None,
) -> None:
    """Serve the scripted model until interrupted (`switchboard model-server`).

    The admin API's control token is `token`, else `$SWITCHBOARD_MODEL_SERVER_CONTROL_TOKEN`,
    else a new one, logged (and only then) so whoever started the server can use it.

    Raises:
        ScenarioError: the scenario file is missing or invalid.
    """
    scenario = load_scenario(scenario_path) if scenario_path else builtin_scenario("demo")
    given = token or os.environ.get(CONTROL_TOKEN_ENV) or None
    app = create_app(scenario, latency_ms=latency_ms, token_rate=token_rate, control_token=given)
    logger.info("scripted model %r on http://%s:%d/v1", scenario.name, host, port)
    if given is None:
        logger.warning(
            "scripted model control token (for /_scenario, /_faults, /_config, /_reset): %s",
            control_token(app),
        )
    _Server(_config(app, host, port), app).run()


class ModelServerHandle:
    """A running scripted model: its address and sync helpers for the admin API."""

    def __init__(self, port: int, token: str | None = None) -> None:
        """`token`: the server's control token (default: `$CONTROL_TOKEN_ENV`)."""
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.url}/v1"
        self.token = token or os.environ.get(CONTROL_TOKEN_ENV, "")
        self._http = httpx.Client(
            base_url=self.url,
            timeout=10.0,
            headers={"Authorization": f"Bearer {self.token}"} if self.token else None,
        )

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_stats")

    def set_scenario(self, scenario: Scenario) -> None:
        self._call("POST", "/_scenario", scenario.model_dump(mode="json"))

    def add_fault(self, kind: FaultKind | str, role: str | None = None, count: int = 1) -> None:
        fault = Fault.model_validate({"kind": kind, "role": role, "count": count})
        self._call("POST", "/_faults", fault.model_dump(mode="json"))

    def reset(self) -> None:
        self._call("POST", "/_reset")

    def configure(
        self,
        *,
        latency_ms: int | None = None,
        token_rate: float | None = None,
        role_latency_ms: dict[str, int] | None = None,
    ) -> None:
        """Change the knobs given; `role_latency_ms={}` clears the per-role overrides."""
        knobs = {"latency_ms": latency_ms, "token_rate": token_rate}
        self._call("POST", "/_config", {**knobs, "role_latency_ms": role_latency_ms})

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: object = None) -> dict[str, Any]:
        response = self._http.request(method, path, json=body)
        if response.is_error:
            raise RuntimeError(f"{method} {path} failed ({response.status_code}): {response.text}")
        result: dict[str, Any] = response.json()
        return result


@contextmanager
def running_model_server(
    scenario: Scenario | None = None,
    *,
    latency_ms: int = 0,
    token_rate: float = 0,
    port: int = 0,
) -> Iterator[ModelServerHandle]:
    """Run the scripted model on 127.0.0.1 in a background thread.

    Port 0 picks a free port. The server answers before this yields and is
    stopped (hanging requests released) when the block exits.

    Raises:
        RuntimeError: the server did not start (port taken, ...).
    """
    app = create_app(scenario, latency_ms=latency_ms, token_rate=token_rate)
    server = _Server(_config(app, "127.0.0.1", port), app)
    thread = threading.Thread(target=server.run, name="scripted-model-server", daemon=True)
    thread.start()
    handle: ModelServerHandle | None = None
    try:
        handle = ModelServerHandle(_wait_started(server, thread), control_token(app))
        handle._call("GET", "/v1/models")
        yield handle
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT_SECONDS)
        if handle is not None:
            handle.close()
        if thread.is_alive():
            logger.warning("the scripted model server did not stop in %ss", STOP_TIMEOUT_SECONDS)


def new_control_token() -> str:
    """A fresh control token, for whoever starts a model server in another process
    (give it to the child as `$SWITCHBOARD_MODEL_SERVER_CONTROL_TOKEN`, and to the handle)."""
    return secrets.token_urlsafe(24)


def _wait_started(server: uvicorn.Server, thread: threading.Thread) -> int:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the scripted model server failed to start (see its log)")
        if time.monotonic() > deadline:
            raise RuntimeError("the scripted model server did not start in time")
        time.sleep(0.01)
    port: int = server.servers[0].sockets[0].getsockname()[1]
    return port
