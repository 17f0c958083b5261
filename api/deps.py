"""Request dependencies as typed aliases: the task service and the current user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from temporalio.client import Client

from switchboard.service import TaskService
from switchboard.settings import Settings, is_loopback

__all__ = [
    "DEFAULT_USER",
    "USER_HEADER",
    "AppSettings",
    "CallerIsRemote",
    "CurrentUser",
    "Service",
    "TemporalClient",
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


def current_user(
    x_switchboard_user: Annotated[
        str | None,
        Header(
            pattern=_USER_PATTERN,
            description="Who is calling (letters, digits and ._@+-). Bearer auth comes later.",
        ),
    ] = None,
) -> str:
    """The caller: the `X-Switchboard-User` header for now, `local` without one."""
    return x_switchboard_user or DEFAULT_USER


def caller_is_remote(request: Request) -> bool:
    """The caller may be on another machine: the API listens beyond loopback, or the
    connection comes from a non-loopback address (a local reverse proxy hides this)."""
    settings: Settings = request.app.state.settings
    client_host = request.client.host if request.client else None
    return not settings.api_is_loopback or not is_loopback(client_host)


Service = Annotated[TaskService, Depends(task_service)]
TemporalClient = Annotated[Client, Depends(temporal_client)]
AppSettings = Annotated[Settings, Depends(app_settings)]
CurrentUser = Annotated[str, Depends(current_user)]
CallerIsRemote = Annotated[bool, Depends(caller_is_remote)]
