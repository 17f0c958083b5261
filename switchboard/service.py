"""TaskService: the one facade over Temporal for delegated tasks (used by the API, the
CLI and the gateway).

Every operation is one or two Temporal round trips (start, query, update, signal,
describe); nothing here blocks on a task's progress except `watch`, which
subscribes to the process's one follower of that task (`switchboard.follow`).
Failures come out as the family in `switchboard.errors`, whose message says what
was wrong and how to fix it, so callers map them to HTTP statuses or exit codes
without parsing gRPC errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from switchboard import repo_refs, wire
from switchboard._decisions import Decisions, policy_for
from switchboard._task_views import (
    closed_phase,
    ended_message,
    not_found_message,
    one_line,
    quote,
    summary,
    task_id_for,
)
from switchboard.credentials import CredentialStore
from switchboard.diffs import DEFAULT_MAX_BYTES, read_diff
from switchboard.errors import (
    QUERY_TIMEOUT,
    Forbidden,
    InvalidRequest,
    NotFound,
    ServiceError,
    ServiceUnavailable,
    TaskNotFound,
    TemporalErrors,
    WrongPhase,
)
from switchboard.follow import TaskFollowers
from switchboard.frontends import repositories_for
from switchboard.identity import Action, Identity, tenant_of
from switchboard.limits import TenantLimiter
from switchboard.models import (
    DiffLocation,
    DiffRequest,
    DiffView,
    EventsPage,
    EventsRequest,
    FollowNotice,
    Phase,
    TaskEvent,
    TaskRequest,
    TaskResult,
    TaskStatus,
    TaskSubmitted,
    TaskSummary,
)
from switchboard.settings import Settings
from switchboard.step_heartbeat import fill_waits

__all__ = ["TaskService", "task_id_for"]

REPO_ATTRIBUTE_CHARS = 250
"""Keyword search attributes are for filtering; the workflow stores the same prefix."""
MEMO_GOAL_CHARS = 1_000
"""The memo is for the Temporal UI; the server warns past 2 KiB, the full goal is the input."""


def _start_attributes(request: TaskRequest) -> TypedSearchAttributes:
    """A new task's search attributes (the workflow keeps them up to date)."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(wire.SearchAttributes.OWNER, request.owner),
            SearchAttributePair(wire.SearchAttributes.TENANT, tenant_of(request.owner)),
            SearchAttributePair(wire.SearchAttributes.PHASE, Phase.PREPARING.value),
            SearchAttributePair(wire.SearchAttributes.REPO, request.repo[:REPO_ATTRIBUTE_CHARS]),
        ]
    )


class TaskService(Decisions):
    """Start, inspect, steer and decide delegated tasks.

    Args:
        client: A connected client using the pydantic data converter.
        settings: Task queue and Temporal address (for error messages).
        remote_callers: Every caller may be on another machine (an API bound beyond
            loopback): local repository paths are held to `Settings.remote_repo_roots`.
    """

    def __init__(self, client: Client, settings: Settings, *, remote_callers: bool = False) -> None:
        self._client = client
        self._settings = settings
        self._remote_callers = remote_callers
        self._translate = TemporalErrors(
            settings.temporal_address,
            "task",
            lambda task_id: TaskNotFound(not_found_message(task_id)),
        )
        self.followers = TaskFollowers(client, self)
        """This process's followers of task events (one poller per task)."""
        self.limiter = TenantLimiter(client, settings.tenant_limits, settings.default_tenant_limits)
        """Per-tenant limits, checked at each submit (`switchboard.limits`)."""

    def repositories_for(self, owner: str) -> dict[str, str]:
        """The repositories `owner` may name by a short name (`Settings.repositories`,
        scoped per tenant and user: `switchboard.frontends.repositories_for`)."""
        return repositories_for(self._settings.repositories, owner)

    # ---- start and list -------------------------------------------------------

    async def submit(
        self, request: TaskRequest, *, remote: bool = False, caller: Identity | None = None
    ) -> TaskSubmitted:
        """Start a task; with a `request_id`, start it at most once.

        Args:
            request: The task.
            remote: The caller is on another machine (local paths: remote roots only).
            caller: The verified submitter: the task's workflow then checks every
                decision, steer and cancel against its policy (`TaskPolicy`).

        Raises:
            InvalidRequest: The repository reference cannot work (see the message).
            Forbidden: `caller` submits in another owner's name.
            LimitExceeded: The tenant is at a limit (a retried request id gets its task).
        """
        if caller is not None and request.owner != caller.owner:
            # The owner decides whose stored credentials, limits and tasks these are.
            raise Forbidden(f"{caller.owner} may not submit a task as {request.owner}")
        roots = self._settings.repo_roots_for(remote=remote or self._remote_callers)
        try:
            repo_refs.validate_repo_reference(request.repo, roots)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        task_id = task_id_for(request.owner, request.request_id)
        request, notice = await self._admit(request, task_id)
        # The credentials of `https://user:token@...` stay on this host, by reference:
        # the task (its history, status, events, search attributes) holds the bare URL.
        # The task holds the reference until its cleanup releases it.
        # A bare URL the owner gave with credentials in a session or a chat message
        # (`CredentialStore.remember`) gets those.
        store = CredentialStore(self._settings.credentials_dir)
        repo, ref = store.put(repo_refs.normalise_repo(request.repo), task_id)
        if ref is None and (held := store.for_owner(request.owner, repo)) is not None:
            ref = held if store.claim(held, task_id) else None
        request = request.model_copy(update={"repo": repo, "credential_ref": ref})
        request = policy_for(request, caller, self._settings)
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
                    search_attributes=_start_attributes(request),
                    memo={"goal": request.goal[:MEMO_GOAL_CHARS]},
                    static_summary=one_line(request.goal, 200),
                )
            except WorkflowAlreadyStartedError:
                if ref is not None:  # a retried request: the claim outlives no ended task
                    handle = self._client.get_workflow_handle(task_id)
                    if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                        CredentialStore(self._settings.credentials_dir).release(task_id)
                return TaskSubmitted(task_id=task_id, created=False)
        return TaskSubmitted(task_id=task_id, created=True, notice=notice)

    async def list(
        self, owner: str | None = None, limit: int = 50, *, tenant: str | None = None
    ) -> list[TaskSummary]:
        """Recent tasks from visibility, optionally only one owner's or one tenant's."""
        query = f"WorkflowType = {quote(wire.Workflows.TASK)}"
        if owner is not None:
            query += f" AND {wire.SearchAttributes.OWNER.name} = {quote(owner)}"
        if tenant is not None:
            query += f" AND {wire.SearchAttributes.TENANT.name} = {quote(tenant)}"
        summaries: list[TaskSummary] = []
        async with self._errors(None):
            async for execution in self._client.list_workflows(query, limit=limit):
                summaries.append(summary(execution))
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

    async def watch(
        self, task_id: str, from_offset: int = 0
    ) -> AsyncIterator[TaskEvent | FollowNotice]:
        """Events from `from_offset` as they happen, until the task has ended and all are
        delivered (through this process's one follower of the task).

        While no worker answers (or Temporal is unreachable) the watch goes on; a
        `FollowNotice` says so once, and once more when the events flow again.
        """
        async for event in self.followers.watch(task_id, from_offset):
            yield event

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

    # ---- ownership ----------------------------------------------------------------

    async def owner_of(self, task_id: str) -> str:
        """The task's owner (from its search attributes, no worker needed)."""
        description = await self._describe(task_id)
        return description.typed_search_attributes.get(wire.SearchAttributes.OWNER) or ""

    async def check_owner(self, task_id: str, user: str) -> None:
        """Raise `TaskNotFound` unless `user` owns the task (others' tasks look absent)."""
        if await self.owner_of(task_id) != user:
            raise TaskNotFound(not_found_message(task_id))

    async def check_access(self, task_id: str, caller: Identity, action: Action) -> None:
        """Before anything reaches the workflow: a task the caller may not see is
        `TaskNotFound` (its existence never leaks); one they see without the role the
        action needs is `Forbidden`, naming the role."""
        owner = await self.owner_of(task_id)
        if not caller.can_see(owner):
            raise TaskNotFound(not_found_message(task_id))
        caller.require(action, owner)

    # ---- internals ----------------------------------------------------------------

    def _handle(self, task_id: str) -> WorkflowHandle[Any, Any]:
        if not task_id.startswith(wire.TASK_ID_PREFIX):
            raise TaskNotFound(not_found_message(task_id))
        return self._client.get_workflow_handle(task_id)

    async def _describe(self, task_id: str) -> WorkflowExecutionDescription:
        handle = self._handle(task_id)
        async with self._translate.around(task_id):
            description = await handle.describe()
        if description.workflow_type != wire.Workflows.TASK:
            raise TaskNotFound(not_found_message(task_id))
        return description

    async def _admit(self, request: TaskRequest, task_id: str) -> tuple[TaskRequest, str | None]:
        async with self._errors(None):
            return await self.limiter.admit(request, tenant_of(request.owner), task_id)

    async def _require_running(self, task_id: str) -> None:
        description = await self._describe(task_id)
        if description.status != WorkflowExecutionStatus.RUNNING:
            raise WrongPhase(ended_message(task_id, description))

    async def _status_from_result(self, handle: WorkflowHandle[Any, Any]) -> TaskStatus | None:
        description = await self._describe(handle.id)
        if description.status == WorkflowExecutionStatus.RUNNING:
            return None
        phase = closed_phase(description)
        result: TaskResult | None = None
        error: str | None = None
        try:
            async with self._errors(handle.id):
                # Typed: an untyped handle gives back a dict, not a TaskResult.
                typed = self._client.get_workflow_handle(handle.id, result_type=TaskResult)
                result = await typed.result(follow_runs=False, rpc_timeout=QUERY_TIMEOUT)
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
            subagents=result.subagents if isinstance(result, TaskResult) else [],
            merge=result.merge if isinstance(result, TaskResult) else None,
            error=error,
            created_at=description.start_time,
            updated_at=description.close_time or description.start_time,
        )

    @asynccontextmanager
    async def _errors(self, task_id: str | None) -> AsyncIterator[None]:
        """Translate Temporal client errors into the family (`switchboard.errors`)."""
        try:
            async with self._translate.around(task_id):
                yield
        except NotFound as exc:
            if task_id is None:
                raise
            # Signals and updates to an ended task get NOT_FOUND too: tell them apart.
            description = await self._describe(task_id)
            raise WrongPhase(ended_message(task_id, description)) from exc
