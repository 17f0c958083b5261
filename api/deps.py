"""Request dependencies as typed aliases: the task service and the caller's identity."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from temporalio.client import Client

from switchboard.auth import Authenticator
from switchboard.identity import Identity
from switchboard.service import TaskService
from switchboard.settings import Settings, is_loopback

__all__ = [
    "DEFAULT_USER",
    "USER_HEADER",
    "AppSettings",
    "CallerIsRemote",
    "CurrentIdentity",
    "CurrentUser",
    "MetricsCaller",
    "Service",
    "TemporalClient",
    "current_identity",
    "current_user",
    "task_service",
]

USER_HEADER = "X-Switchboard-User"
DEFAULT_USER = "local"
_USER_PATTERN = r"^[A-Za-z0-9._@+-]{1,200}$"


def task_service(request: Request) -> TaskService:
    service: TaskService = request.app.state.task_service
    return service


def temporal_client(request: Request) -> Client:
    client: Client = request.app.state.temporal_client
    return client


def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def current_identity(
    request: Request,
    authorization: Annotated[
        str | None,
        Header(description="`Bearer <token>`: an API token or an OIDC access token."),
    ] = None,
    x_switchboard_user: Annotated[
        str | None,
        Header(
            pattern=_USER_PATTERN,
            description="Local mode only: who is calling (letters, digits and ._@+-). "
            "Ignored when the API verifies tokens.",
        ),
    ] = None,
) -> Identity:
    """The verified caller (401 without valid credentials; see `switchboard.auth`)."""
    authenticator: Authenticator = request.app.state.authenticator
    return await authenticator.identify(authorization, x_switchboard_user, request.headers)


def current_user(identity: Annotated[Identity, Depends(current_identity)]) -> str:
    """The caller's owner key (`tenant/subject`; the bare name in local mode)."""
    return identity.owner


async def metrics_caller(request: Request) -> None:
    """With `auth_metrics` set, `/metrics` needs valid credentials too."""
    settings: Settings = request.app.state.settings
    if settings.auth_metrics and not settings.auth_is_local:
        authenticator: Authenticator = request.app.state.authenticator
        await authenticator.identify(request.headers.get("authorization"), None, request.headers)


def caller_is_remote(request: Request) -> bool:
    """The caller may be on another machine: the API listens beyond loopback, or the
    connection comes from a non-loopback address (a local reverse proxy hides this)."""
    settings: Settings = request.app.state.settings
    client_host = request.client.host if request.client else None
    return not settings.api_is_loopback or not is_loopback(client_host)


Service = Annotated[TaskService, Depends(task_service)]
TemporalClient = Annotated[Client, Depends(temporal_client)]
AppSettings = Annotated[Settings, Depends(app_settings)]
CurrentIdentity = Annotated[Identity, Depends(current_identity)]
CurrentUser = Annotated[str, Depends(current_user)]
MetricsCaller = Annotated[None, Depends(metrics_caller)]
CallerIsRemote = Annotated[bool, Depends(caller_is_remote)]
