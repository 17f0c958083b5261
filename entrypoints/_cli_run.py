"""How a `switchboard task ...` command reaches its tasks: through the API as the
signed-in user (the default), or, with `switchboard task --direct`, straight to
Temporal as an operator (no identity checks: whoever reaches Temporal can do this
with the `temporal` CLI too, so Temporal itself must be locked down; see
docs/security.md). Errors of either route end the command with the same exit codes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Protocol, TypeVar

import typer

from entrypoints._cli_auth import TOKEN_ENV, use_token
from entrypoints._cli_common import (
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    fail,
    load_settings,
)

if TYPE_CHECKING:
    from switchboard.audit import AuditTrail
    from switchboard.models import (
        ApprovalRecord,
        ApproveInput,
        DiffView,
        FollowNotice,
        RejectInput,
        RequestChangesInput,
        SteerInput,
        TaskEvent,
        TaskRequest,
        TaskStatus,
        TaskSubmitted,
        TaskSummary,
    )

__all__ = ["Tasks", "cli_options", "run_tasks", "set_direct", "task_options"]

_T = TypeVar("_T")

_direct: list[bool] = [False]


class Tasks(Protocol):
    """The task calls the CLI makes: `TaskService` (direct) or `ApiTasks` (the API)."""

    async def submit(self, request: TaskRequest) -> TaskSubmitted: ...
    async def list(self, owner: str | None = None, limit: int = 50) -> list[TaskSummary]: ...
    async def status(self, task_id: str) -> TaskStatus: ...
    async def diff(self, task_id: str, subagent: int | None = None) -> DiffView: ...
    async def approve(self, task_id: str, decision: ApproveInput) -> ApprovalRecord: ...
    async def request_changes(
        self, task_id: str, decision: RequestChangesInput
    ) -> ApprovalRecord: ...
    async def reject(self, task_id: str, decision: RejectInput) -> ApprovalRecord: ...
    async def cancel(self, task_id: str) -> None: ...
    async def steer(self, task_id: str, steer: SteerInput) -> None: ...
    async def audit(self, task_id: str) -> AuditTrail: ...
    def watch(
        self, task_id: str, from_offset: int = 0
    ) -> AsyncIterator[TaskEvent | FollowNotice]: ...


def cli_options(
    context: typer.Context,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar=TOKEN_ENV,
            help="Your API or access token (default: the one 'switchboard login' stored).",
            show_envvar=True,
        ),
    ] = None,
) -> None:
    """Durable orchestration of sandboxed coding subagents."""
    use_token(token)  # read by `_cli_auth.resolve_token` wherever a request is made
    context.call_on_close(lambda: use_token(None))


def task_options(
    direct: Annotated[
        bool,
        typer.Option(
            "--direct",
            help="Operator only: go straight to Temporal instead of the API (no identity "
            "or role checks; needs access to Temporal).",
        ),
    ] = False,
) -> None:
    """Delegate, watch, inspect and decide tasks (through the API as you)."""
    set_direct(direct)


def set_direct(direct: bool) -> None:
    """`switchboard task --direct`: this command goes to Temporal, not the API."""
    _direct[0] = direct


def is_direct() -> bool:
    return _direct[0]


def run_tasks(operation: Callable[[Tasks], Awaitable[_T]], user: str) -> _T:
    """Run one operation by the chosen route, turning its errors into exit codes:
    1 refused or wrong input, 2 not signed in (says how to), 3 unreachable."""
    from switchboard.errors import ServiceError, ServiceUnavailable, Unauthenticated

    try:
        return asyncio.run(_direct_call(operation) if is_direct() else _api_call(operation, user))
    except Unauthenticated as exc:
        fail(f"not signed in: {exc}", EXIT_USAGE)
    except ServiceUnavailable as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except ServiceError as exc:
        fail(str(exc), EXIT_FAILED)


async def _api_call(operation: Callable[[Tasks], Awaitable[_T]], user: str) -> _T:
    from entrypoints._cli_api import ApiTasks

    async with ApiTasks(load_settings().api_base_url, user) as tasks:
        return await operation(tasks)


async def _direct_call(operation: Callable[[Tasks], Awaitable[_T]]) -> _T:
    from switchboard.service import TaskService
    from switchboard.temporal import connect

    settings = load_settings()
    client = await connect(settings)
    return await operation(TaskService(client, settings))
