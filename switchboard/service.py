"""TaskService: the one facade over Temporal for delegated tasks (used by the API and the CLI).

Every operation is one or two Temporal round trips (start, query, update, signal,
describe); nothing here blocks on a task's progress except `watch`, which polls the
events query. Failures come out as a small exception family whose message says
what was wrong and how to fix it, so callers map them to HTTP statuses or exit
codes without parsing gRPC errors.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from ulid import ULID

from switchboard import repo_refs, wire
from switchboard.diffs import DEFAULT_MAX_BYTES, read_diff
from switchboard.models import (
    ApprovalRecord,
    ApproveInput,
    DiffLocation,
    DiffRequest,
    DiffView,
    EventsPage,
    EventsRequest,
    Phase,
    RejectInput,
    RequestChangesInput,
    SteerInput,
    TaskEvent,
    TaskRequest,
    TaskResult,
    TaskStatus,
    TaskSubmitted,
    TaskSummary,
)
from switchboard.settings import Settings
from switchboard.step_heartbeat import fill_waits

__all__ = [
    "InvalidRequest",
    "ServiceError",
    "ServiceUnavailable",
    "TaskNotFound",
    "TaskService",
    "WrongPhase",
    "task_id_for",
]

QUERY_TIMEOUT = timedelta(seconds=10)
"""A query needs a worker; past this, say that none is answering instead of hanging."""
UPDATE_TIMEOUT = timedelta(seconds=30)
POLL_MIN_SECONDS = 0.1
POLL_MAX_SECONDS = 1.0
WATCH_PAGE = 500
REPO_ATTRIBUTE_CHARS = 250
"""Keyword search attributes are for filtering; the workflow stores the same prefix."""
MEMO_GOAL_CHARS = 1_000
"""The memo is for the Temporal UI; the server warns past 2 KiB, the full goal is the input."""


class ServiceError(Exception):
    """A task operation failed; `str(error)` is the message to show the user."""


class TaskNotFound(ServiceError):
    """No task with that id (or not one this user may see)."""


class InvalidRequest(ServiceError):
    """The request itself is wrong (bad repo, empty feedback, ...): fix it and retry."""


class WrongPhase(ServiceError):
    """The task exists but is not in a phase that allows this operation."""


class ServiceUnavailable(ServiceError):
    """Temporal, or every worker, is not answering: retry once it is back."""

    @classmethod
    def unreachable(cls, address: str) -> ServiceUnavailable:
        return cls(
            f"Temporal is not reachable at {address}: start it with `switchboard up`, "
            "or point SWITCHBOARD_TEMPORAL_ADDRESS at a running server"
        )


def task_id_for(owner: str, request_id: str | None) -> str:
    """A new task id, or the one a client request id always maps to for this owner.

    The ULID of an idempotent submit is derived from sha256(owner, request_id), so
    retrying the same request reaches the same workflow id and starts it once.
    """
    if request_id is None:
        return f"{wire.TASK_ID_PREFIX}{ULID()}"
    digest = hashlib.sha256(f"{owner}\n{request_id}".encode()).digest()
    return f"{wire.TASK_ID_PREFIX}{ULID.from_bytes(digest[:16])}"


class TaskService:
    """Start, inspect, steer and decide delegated tasks.

    Args:
        client: A connected client using the pydantic data converter.
        settings: Task queue and Temporal address (for error messages).
    """

    def __init__(self, client: Client, settings: Settings) -> None:
        self._client = client
        self._settings = settings

    # ---- start and list -------------------------------------------------------

    async def submit(self, request: TaskRequest) -> TaskSubmitted:
        """Start a task; with a `request_id`, start it at most once.

        Raises:
            InvalidRequest: The repository reference cannot work (see the message).
        """
        try:
            repo_refs.validate_repo_reference(request.repo)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        request = request.model_copy(update={"repo": repo_refs.normalise_repo(request.repo)})
        task_id = task_id_for(request.owner, request.request_id)
        async with self._errors(None):  # a NOT_FOUND here is the namespace, not the task
            try:
                await self._client.start_workflow(
                    wire.Workflows.TASK,
                    request,
                    id=task_id,
                    task_queue=self._settings.task_queue,
                    # A request id maps to one task forever, even after it has ended.
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                    search_attributes=TypedSearchAttributes(
                        [
                            SearchAttributePair(wire.SearchAttributes.OWNER, request.owner),
                            SearchAttributePair(wire.SearchAttributes.PHASE, Phase.PREPARING.value),
                            SearchAttributePair(
                                wire.SearchAttributes.REPO, request.repo[:REPO_ATTRIBUTE_CHARS]
                            ),
                        ]
                    ),
                    memo={"goal": request.goal[:MEMO_GOAL_CHARS]},
                    static_summary=_one_line(request.goal, 200),
                )
            except WorkflowAlreadyStartedError:
                return TaskSubmitted(task_id=task_id, created=False)
        return TaskSubmitted(task_id=task_id, created=True)

    async def list(self, owner: str | None = None, limit: int = 50) -> list[TaskSummary]:
        """Recent tasks from visibility, optionally only one owner's."""
        query = f"WorkflowType = {_quote(wire.Workflows.TASK)}"
        if owner is not None:
            query += f" AND {wire.SearchAttributes.OWNER.name} = {_quote(owner)}"
        summaries: list[TaskSummary] = []
        async with self._errors(None):
            async for execution in self._client.list_workflows(query, limit=limit):
                summaries.append(_summary(execution))
        return summaries

    # ---- queries ----------------------------------------------------------------

    async def status(self, task_id: str) -> TaskStatus:
        """The task's live status (from the workflow; a worker must be running)."""
        handle = self._handle(task_id)
        try:
            async with self._errors(task_id):
                status: TaskStatus = await handle.query(
                    wire.Queries.STATUS, result_type=TaskStatus, rpc_timeout=QUERY_TIMEOUT
                )
                return await fill_waits(self._client, status)
        except (TaskNotFound, InvalidRequest, WrongPhase):
            raise
        except ServiceError:
            # No worker answered, or the task ended before any worker ran it: an
            # ended task can still be described from its result and search attributes.
            ended = await self._status_from_result(handle)
            if ended is None:
                raise
            return ended

    async def events(self, task_id: str, from_offset: int = 0, limit: int = 500) -> EventsPage:
        """One page of the task's event stream, from `from_offset`."""
        request = EventsRequest(from_offset=from_offset, limit=limit)
        async with self._errors(task_id):
            page: EventsPage = await self._handle(task_id).query(
                wire.Queries.EVENTS, request, result_type=EventsPage, rpc_timeout=QUERY_TIMEOUT
            )
        return page

    async def watch(self, task_id: str, from_offset: int = 0) -> AsyncIterator[TaskEvent]:
        """Events as they happen, until the task has ended and all are delivered.

        Polls the events query: every 100 ms while events flow, backing off to
        1 s when idle. When idle at the slowest rate it also checks that the
        workflow is still running, so a terminated task ends the watch too.
        """
        offset = from_offset
        delay = POLL_MIN_SECONDS
        while True:
            page = await self.events(task_id, offset, WATCH_PAGE)
            for event in page.events:
                yield event
            offset = max(offset, page.next_offset)
            full = len(page.events) >= WATCH_PAGE
            if full:
                continue
            if page.final:
                return
            if page.events:
                delay = POLL_MIN_SECONDS
            else:
                if delay >= POLL_MAX_SECONDS and not await self._is_running(task_id):
                    last = await self.events(task_id, offset, WATCH_PAGE)
                    for event in last.events:
                        yield event
                    return
                delay = min(delay * 2, POLL_MAX_SECONDS)
            await asyncio.sleep(delay)

    async def diff(
        self, task_id: str, subagent: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> DiffView:
        """The task's diff (or one subagent's), read from git on this host.

        Raises:
            WrongPhase: No diff is ready yet.
            ServiceUnavailable: The mirror holding the diff is not on this host.
        """
        async with self._errors(task_id):
            location = await self._handle(task_id).query(
                wire.Queries.DIFF,
                DiffRequest(subagent=subagent),
                result_type=DiffLocation,
                rpc_timeout=QUERY_TIMEOUT,
            )
        if location.ref is None or location.mirror_path is None or location.base_commit is None:
            which = f"subagent {subagent}" if subagent is not None else "the task"
            raise WrongPhase(
                f"{task_id}: no diff for {which} yet; it is ready after the `diff_ready` "
                f"event (watch with `switchboard task watch {task_id}`)"
            )
        try:
            stat, patch, truncated = await asyncio.to_thread(
                read_diff, location.mirror_path, location.base_commit, location.ref, max_bytes
            )
        except (FileNotFoundError, ValueError) as exc:
            raise ServiceUnavailable(
                f"{task_id}: cannot read the diff here ({exc}); read it on the worker host "
                "that holds the repository mirror"
            ) from exc
        return DiffView(
            task_id=task_id,
            subagent=subagent,
            base_commit=location.base_commit,
            stat=stat,
            patch=patch,
            truncated=truncated,
        )

    # ---- decisions and steering ---------------------------------------------------

    async def approve(self, task_id: str, decision: ApproveInput) -> ApprovalRecord:
        return await self._decide(task_id, wire.Updates.APPROVE, decision)

    async def request_changes(self, task_id: str, decision: RequestChangesInput) -> ApprovalRecord:
        if not decision.feedback.strip():
            raise InvalidRequest("feedback is empty: say what should change")
        return await self._decide(task_id, wire.Updates.REQUEST_CHANGES, decision)

    async def reject(self, task_id: str, decision: RejectInput) -> ApprovalRecord:
        return await self._decide(task_id, wire.Updates.REJECT, decision)

    async def cancel(self, task_id: str) -> None:
        """Ask the task to stop; it cleans up and ends as `cancelled`."""
        await self._require_running(task_id)
        async with self._errors(task_id):
            await self._handle(task_id).cancel()

    async def steer(self, task_id: str, steer: SteerInput) -> None:
        """Send new guidance to the task's running subagents."""
        if not steer.guidance.strip():
            raise InvalidRequest("guidance is empty: say what the subagents should do differently")
        async with self._errors(task_id):
            await self._handle(task_id).signal(wire.Signals.STEER, steer)

    # ---- ownership ----------------------------------------------------------------

    async def owner_of(self, task_id: str) -> str:
        """The task's owner (from its search attributes, no worker needed)."""
        description = await self._describe(task_id)
        return description.typed_search_attributes.get(wire.SearchAttributes.OWNER) or ""

    async def check_owner(self, task_id: str, user: str) -> None:
        """Raise `TaskNotFound` unless `user` owns the task (others' tasks look absent)."""
        if await self.owner_of(task_id) != user:
            raise TaskNotFound(_not_found_message(task_id))

    # ---- internals ----------------------------------------------------------------

    def _handle(self, task_id: str) -> WorkflowHandle[Any, Any]:
        if not task_id.startswith(wire.TASK_ID_PREFIX):
            raise TaskNotFound(_not_found_message(task_id))
        return self._client.get_workflow_handle(task_id)

    async def _describe(self, task_id: str) -> WorkflowExecutionDescription:
        handle = self._handle(task_id)
        try:
            description = await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise TaskNotFound(_not_found_message(task_id)) from exc
            raise self._unavailable(exc) from exc
        except RuntimeError as exc:
            raise ServiceUnavailable.unreachable(self._settings.temporal_address) from exc
        if description.workflow_type != wire.Workflows.TASK:
            raise TaskNotFound(_not_found_message(task_id))
        return description

    async def _is_running(self, task_id: str) -> bool:
        description = await self._describe(task_id)
        return description.status == WorkflowExecutionStatus.RUNNING

    async def _require_running(self, task_id: str) -> None:
        description = await self._describe(task_id)
        if description.status != WorkflowExecutionStatus.RUNNING:
            raise WrongPhase(_ended_message(task_id, description))

    async def _decide(self, task_id: str, update: str, decision: Any) -> ApprovalRecord:
        async with self._errors(task_id):
            record: ApprovalRecord = await self._handle(task_id).execute_update(
                update, decision, result_type=ApprovalRecord, rpc_timeout=UPDATE_TIMEOUT
            )
        return record

    async def _status_from_result(self, handle: WorkflowHandle[Any, Any]) -> TaskStatus | None:
        description = await self._describe(handle.id)
        if description.status == WorkflowExecutionStatus.RUNNING:
            return None
        phase = _closed_phase(description)
        result: TaskResult | None = None
        error: str | None = None
        try:
            async with self._errors(handle.id):
                result = await handle.result(follow_runs=False, rpc_timeout=QUERY_TIMEOUT)
        except WorkflowFailureError as exc:  # failed, cancelled or terminated
            error = str(exc.cause or exc)
        if isinstance(result, TaskResult):
            phase, error = result.phase, result.error
        memo = await description.memo()
        attributes = description.typed_search_attributes
        return TaskStatus(
            task_id=handle.id,
            goal=str(memo.get("goal", "")),
            repo=attributes.get(wire.SearchAttributes.REPO) or "",
            owner=attributes.get(wire.SearchAttributes.OWNER) or "",
            phase=phase,
            subagents=result.subagents if result else [],
            merge=result.merge if result else None,
            error=error,
            created_at=description.start_time,
            updated_at=description.close_time or description.start_time,
        )

    @asynccontextmanager
    async def _errors(self, task_id: str | None) -> AsyncIterator[None]:
        """Translate Temporal client errors into the service's exception family."""
        try:
            yield
        except WorkflowUpdateFailedError as exc:
            raise _update_failure(task_id, exc) from exc
        except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
            raise ServiceUnavailable(_no_worker_message(task_id, UPDATE_TIMEOUT)) from exc
        except WorkflowQueryFailedError as exc:
            raise InvalidRequest(f"{task_id}: {exc}") from exc
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND and task_id is not None:
                # Also what signals and updates to an ended workflow get back.
                description = await self._describe(task_id)
                raise WrongPhase(_ended_message(task_id, description)) from exc
            if exc.status == RPCStatusCode.INVALID_ARGUMENT:
                raise InvalidRequest(exc.message) from exc
            raise self._unavailable(exc, task_id) from exc
        except RuntimeError as exc:
            if "connect" not in str(exc).lower():
                raise
            raise ServiceUnavailable.unreachable(self._settings.temporal_address) from exc

    def _unavailable(self, exc: RPCError, task_id: str | None = None) -> ServiceError:
        if exc.status in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED):
            return ServiceUnavailable(_no_worker_message(task_id, QUERY_TIMEOUT))
        if exc.status == RPCStatusCode.UNAVAILABLE:
            return ServiceUnavailable.unreachable(self._settings.temporal_address)
        return ServiceError(f"Temporal refused the call: {exc.message}")


def _update_failure(task_id: str | None, exc: WorkflowUpdateFailedError) -> ServiceError:
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        if cause.type == wire.Errors.WRONG_PHASE:
            return WrongPhase(f"{task_id}: {cause.message}")
        if cause.type == wire.Errors.INVALID_INPUT:
            return InvalidRequest(f"{task_id}: {cause.message}")
    return ServiceError(f"{task_id}: the task refused the update: {cause}")


_PHASE_VALUES = frozenset(phase.value for phase in Phase)


def _closed_phase(description: WorkflowExecutionDescription) -> Phase:
    recorded = description.typed_search_attributes.get(wire.SearchAttributes.PHASE)
    if recorded in _PHASE_VALUES and Phase(recorded).is_final:
        return Phase(recorded)
    if description.status == WorkflowExecutionStatus.CANCELED:
        return Phase.CANCELLED
    return Phase.FAILED


def _summary(execution: Any) -> TaskSummary:
    attributes = execution.typed_search_attributes
    status = execution.status
    phase = attributes.get(wire.SearchAttributes.PHASE) or ""
    if status is not None and status != WorkflowExecutionStatus.RUNNING:
        phase = _closed_phase(execution).value
    return TaskSummary(
        task_id=execution.id,
        phase=phase,
        owner=attributes.get(wire.SearchAttributes.OWNER) or "",
        repo=attributes.get(wire.SearchAttributes.REPO) or "",
        status=status.name.lower() if status is not None else "unknown",
        started_at=execution.start_time,
    )


def _quote(value: str) -> str:
    """A visibility-query string literal (backslash escapes quote and backslash)."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def _one_line(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _not_found_message(task_id: str) -> str:
    return f"no task {task_id!r}: list your tasks with `switchboard task list` or GET /v1/tasks"


def _ended_message(task_id: str, description: WorkflowExecutionDescription) -> str:
    phase = _closed_phase(description)
    return f"{task_id} has already ended ({phase.value}); nothing can change it now"


def _no_worker_message(task_id: str | None, timeout: timedelta) -> str:
    subject = task_id or "the task"
    return (
        f"no worker answered for {subject} within {timeout.total_seconds():.0f} s: "
        "is `switchboard worker` running against this Temporal server?"
    )
