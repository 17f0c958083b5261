"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.middleware import BodyLimit, RequestMetrics
from api.openapi import install_openapi
from api.routes import api_router
from switchboard import __version__
from switchboard.auth import Authenticator
from switchboard.llm_client import GATEWAY_RETRIES, openai_client
from switchboard.service import TaskService
from switchboard.settings import Settings
from switchboard.temporal import connect

__all__ = ["UnsafeBind", "create_app"]

log = logging.getLogger(__name__)


class UnsafeBind(RuntimeError):
    """The API would listen beyond loopback with nobody's identity verified."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The Switchboard API.

    Args:
        settings: Configuration; read from `SWITCHBOARD_*` variables when omitted.
    """
    settings = settings or Settings()
    if settings.auth_is_local and not settings.api_is_loopback:
        raise UnsafeBind(
            f"refusing to serve on {settings.api_host}: local mode trusts whoever calls. "
            "Set SWITCHBOARD_AUTH_MODE=tokens (and create tokens with 'switchboard token "
            "create') or oidc, or listen on 127.0.0.1"
        )
    if settings.auth_is_local:
        log.warning(
            "auth is off (local mode): anyone who can reach %s acts as any user; "
            "loopback only. Set SWITCHBOARD_AUTH_MODE=tokens or oidc to verify callers.",
            settings.api_base_url,
        )
    authenticator = Authenticator(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Lazy: the API starts (and answers 503) while Temporal is still coming up.
        client = await connect(settings, lazy=True)
        app.state.settings = settings
        app.state.authenticator = authenticator
        app.state.temporal_client = client
        app.state.task_service = TaskService(
            client, settings, remote_callers=not settings.api_is_loopback
        )
        # Frontends' own background requests (titles, tags) go straight to the model.
        app.state.plain_llm = openai_client(settings, max_retries=GATEWAY_RETRIES)
        try:
            yield
        finally:
            await app.state.plain_llm.close()

    app = FastAPI(
        title="Switchboard",
        version=__version__,
        summary="Delegate coding tasks to durable, sandboxed subagents.",
        lifespan=lifespan,
    )
    app.include_router(api_router)
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(BodyLimit)
    app.add_middleware(RequestMetrics)
    return app
