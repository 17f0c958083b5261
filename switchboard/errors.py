"""The error family of every Temporal-backed operation, and the one translation into it.

Callers (the API, the CLI, the gateway's tools) handle these and never a gRPC
error: each says what was wrong and how to fix it, and its class says what the
caller can do about it (`api.errors` maps the classes to HTTP statuses, once).

| class | meaning | HTTP |
|---|---|---|
| `NotFound` (`TaskNotFound`, `SessionNotFound`) | no such thing, or not the caller's | 404 |
| `InvalidRequest` | the request is wrong: fix it and retry | 400 |
| `WrongPhase` | it exists but is not in a phase that allows this | 409 |
| `Unauthenticated` | no credentials, or ones that do not verify | 401 |
| `Forbidden` | a verified caller without the role this needs | 403 |
| `Refused` | the workflow's validator refused the update for another reason | 502 |
| `LimitExceeded` | the caller's tenant is at one of its limits (named): retry later | 429 |
| `ServiceUnavailable` | Temporal, or every worker, is not answering: retry later | 503 |
| `ServiceError` | anything else Temporal refused | 502 |
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

from temporalio.client import (
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from switchboard import wire

__all__ = [
    "QUERY_TIMEOUT",
    "UPDATE_TIMEOUT",
    "Forbidden",
    "InvalidRequest",
    "LimitExceeded",
    "NotFound",
    "Refused",
    "ServiceError",
    "ServiceUnavailable",
    "SessionNotFound",
    "TaskNotFound",
    "TemporalErrors",
    "Unauthenticated",
    "WrongPhase",
]

QUERY_TIMEOUT = timedelta(seconds=10)
"""A query needs a worker; past this, say that none is answering instead of hanging."""
UPDATE_TIMEOUT = timedelta(seconds=30)


class ServiceError(Exception):
    """An operation failed; `str(error)` is the message to show the user."""


class NotFound(ServiceError):
    """No such workflow (or not one this caller may see)."""


class Unauthenticated(ServiceError):
    """No credentials, or credentials that do not verify (expired, wrong issuer, ...)."""


class Forbidden(ServiceError):
    """The caller is known and may see the thing, but lacks the role the action needs."""


class TaskNotFound(NotFound):
    """No task with that id (or not one this user may see)."""


class SessionNotFound(TaskNotFound):
    """No session with that id, or not the caller's.

    A subclass of `TaskNotFound` because callers written before sessions existed
    catch that for every not-found.
    """


class InvalidRequest(ServiceError):
    """The request itself is wrong (bad repo, empty feedback, ...): fix it and retry."""


class WrongPhase(ServiceError):
    """The task or session exists but is not in a phase that allows this operation."""


class Refused(ServiceError):
    """The workflow's update validator refused the request for a reason of its own."""


class LimitExceeded(ServiceError):
    """The caller's tenant is at one of its limits; the message names it.

    Args:
        message: Which limit, its value and what to do.
        retry_after: Seconds after which a retry may succeed (the `Retry-After` header).
    """

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class ServiceUnavailable(ServiceError):
    """Temporal, or every worker, is not answering: retry once it is back."""

    @classmethod
    def unreachable(cls, address: str) -> ServiceUnavailable:
        return cls(
            f"Temporal is not reachable at {address}: start it with `switchboard up`, "
            "or point SWITCHBOARD_TEMPORAL_ADDRESS at a running server"
        )


class TemporalErrors:
    """Translates temporalio client errors about one kind of workflow into the family.

    Args:
        address: The Temporal address, for "not reachable" messages.
        noun: What the workflows are to the user (`task`, `session`).
        not_found: Builds the not-found error for an id (its message says how to
            find a valid one).
    """

    def __init__(self, address: str, noun: str, not_found: Callable[[str], NotFound]) -> None:
        self._address = address
        self._noun = noun
        self._not_found = not_found

    def not_found(self, target: str) -> NotFound:
        return self._not_found(target)

    def translate(self, exc: BaseException, target: str | None) -> ServiceError | None:
        """The family member for `exc` (about `target`, if known), or None if it is not
        a Temporal client error (then it is a bug to let through)."""
        if isinstance(exc, WorkflowUpdateFailedError):
            return self._update_failure(target, exc)
        if isinstance(exc, WorkflowUpdateRPCTimeoutOrCancelledError):
            return ServiceUnavailable(self._no_worker(target, UPDATE_TIMEOUT))
        if isinstance(exc, WorkflowQueryFailedError):
            return InvalidRequest(f"{target}: {exc}")
        if isinstance(exc, RPCError):
            return self._rpc(exc, target)
        if isinstance(exc, RuntimeError) and "connect" in str(exc).lower():
            return ServiceUnavailable.unreachable(self._address)
        return None

    @asynccontextmanager
    async def around(self, target: str | None) -> AsyncIterator[None]:
        """Raise the family member for any Temporal client error inside the block."""
        try:
            yield
        except ServiceError:
            raise
        except Exception as exc:
            error = self.translate(exc, target)
            if error is None:
                raise
            raise error from exc

    def _rpc(self, exc: RPCError, target: str | None) -> ServiceError:
        # NOT_FOUND is also what signals and updates to an ended workflow get back;
        # a caller that can tell the two apart (by describing) refines it.
        if exc.status == RPCStatusCode.NOT_FOUND and target is not None:
            return self._not_found(target)
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            return InvalidRequest(exc.message)
        if exc.status in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED):
            return ServiceUnavailable(self._no_worker(target, QUERY_TIMEOUT))
        if exc.status == RPCStatusCode.UNAVAILABLE:
            return ServiceUnavailable.unreachable(self._address)
        if _retry_later(exc):
            return ServiceUnavailable(self._no_worker(target, QUERY_TIMEOUT))
        return ServiceError(f"Temporal refused the call: {exc.message}")

    def _update_failure(self, target: str | None, exc: WorkflowUpdateFailedError) -> ServiceError:
        cause = exc.cause
        if isinstance(cause, ApplicationError):
            if cause.type == wire.Errors.WRONG_PHASE:
                return WrongPhase(f"{target}: {cause.message}")
            if cause.type == wire.Errors.INVALID_INPUT:
                return InvalidRequest(f"{target}: {cause.message}")
            if cause.type == wire.Errors.FORBIDDEN:
                return Forbidden(f"{target}: {cause.message}")
        return Refused(f"{target}: the {self._noun} refused the update: {cause}")

    def _no_worker(self, target: str | None, timeout: timedelta) -> str:
        subject = target or f"the {self._noun}"
        return (
            f"no worker answered for {subject} within {timeout.total_seconds():.0f} s: "
            "is `switchboard worker` running against this Temporal server?"
        )


def _retry_later(exc: RPCError) -> bool:
    """Temporal's refusals that mean "retry later", not "never": no worker polled the
    queue lately (an update), or the server is rate limiting."""
    if exc.status == RPCStatusCode.RESOURCE_EXHAUSTED:
        return True
    return exc.status == RPCStatusCode.FAILED_PRECONDITION and "no poller" in exc.message
