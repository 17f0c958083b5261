"""Typed calls to `ConversationWorkflow`: start, post, claim, record, read.

Each is one Temporal round trip (an update ~8 ms, a query ~4 ms on one machine).
Failures come out as the family of `switchboard.errors`, translated by the same
code as the task service's, so the API maps them to statuses the same way.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)

from switchboard import wire
from switchboard.conversation import (
    SESSION_ID_PREFIX,
    ClaimResult,
    ClaimTurn,
    CloseSession,
    EntriesPage,
    EntriesRequest,
    PostMessage,
    PostResult,
    RecordResult,
    RecordTurn,
    SessionStart,
    SessionState,
    TaskEventsInput,
    TaskEventsResult,
    TurnContext,
    TurnContextRequest,
    conversation_queue,
)
from switchboard.errors import (
    QUERY_TIMEOUT,
    UPDATE_TIMEOUT,
    ServiceError,
    SessionNotFound,
    TemporalErrors,
    WrongPhase,
)
from switchboard.models import Model
from switchboard.settings import Settings

__all__ = ["SessionNotFound", "SessionStore", "SessionSummary", "TooManySessions"]

_SESSION_ID = re.compile(rf"^{SESSION_ID_PREFIX}[0-9A-HJKMNP-TV-Z]{{26}}$")

R = TypeVar("R", bound=BaseModel)


class TooManySessions(ServiceError):
    """The owner holds the most open sessions allowed: close one first."""


class SessionSummary(Model):
    session_id: str
    owner: str
    title: str = ""
    status: str
    started_at: str | None = None


class SessionStore:
    """The conversation workflows of one namespace.

    Args:
        client: A client with the pydantic data converter.
        settings: The task queue the workers poll, and the Temporal address.
    """

    def __init__(self, client: Client, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._errors = TemporalErrors(
            settings.temporal_address,
            "session",
            lambda session_id: SessionNotFound(_not_found(session_id)),
        ).around

    async def start(self, session_id: str, start: SessionStart) -> None:
        """Start the session's workflow, or reuse the running one with that id."""
        async with self._errors(session_id):
            await self._client.start_workflow(
                wire.Conversation.WORKFLOW,
                start,
                id=session_id,
                task_queue=conversation_queue(self._settings.task_queue),
                # A keyed session (the OpenAI `user` field) is reused, never duplicated.
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                search_attributes=TypedSearchAttributes(
                    [SearchAttributePair(wire.SearchAttributes.OWNER, start.owner)]
                ),
                memo={"title": start.title},
                static_summary=f"chat of {start.owner}"
                + (f": {start.title}" if start.title else ""),
            )

    async def owner(self, session_id: str) -> str:
        """The owner from the search attributes: one describe, no worker needed."""
        handle = self._handle(session_id)
        async with self._errors(session_id):
            description = await handle.describe()
        if description.workflow_type != wire.Conversation.WORKFLOW:
            raise SessionNotFound(_not_found(session_id))
        if description.status not in (
            WorkflowExecutionStatus.RUNNING,
            WorkflowExecutionStatus.CONTINUED_AS_NEW,
        ):
            raise WrongPhase(f"{session_id} is closed: start a new session")
        return description.typed_search_attributes.get(wire.SearchAttributes.OWNER) or ""

    async def count_open(self, owner: str) -> int:
        """The owner's running sessions, from visibility (which may lag a moment)."""
        async with self._errors(None):
            counted = await self._client.count_workflows(_open_sessions(owner))
        return counted.count

    async def is_open(self, session_id: str) -> bool:
        try:
            await self.owner(session_id)
        except (SessionNotFound, WrongPhase):
            return False
        return True

    async def check_quota(self, owner: str, limit: int, keyed: str | None) -> None:
        """Raise `TooManySessions` if `owner` holds `limit` open sessions (reusing the
        open session `keyed` adds none)."""
        if await self.count_open(owner) < limit:
            return
        if keyed is not None and await self.is_open(keyed):
            return
        raise TooManySessions(
            f"{owner} has {limit} open sessions, the most allowed: close one "
            "(DELETE /v1/sessions/{id}) or wait for an idle one to close itself"
        )

    async def list(self, owner: str, limit: int = 50) -> list[SessionSummary]:
        query = _open_sessions(owner)
        found: list[SessionSummary] = []
        async with self._errors(None):
            async for execution in self._client.list_workflows(query, limit=limit):
                memo = await execution.memo()
                found.append(
                    SessionSummary(
                        session_id=execution.id,
                        owner=owner,
                        title=str(memo.get("title", "")),
                        status=execution.status.name.lower() if execution.status else "unknown",
                        started_at=execution.start_time.isoformat(),
                    )
                )
        return found

    async def state(self, session_id: str) -> SessionState:
        return await self._query(session_id, wire.Conversation.STATE, None, SessionState)

    async def entries(self, session_id: str, from_offset: int, limit: int = 500) -> EntriesPage:
        request = EntriesRequest(from_offset=from_offset, limit=limit)
        return await self._query(session_id, wire.Conversation.ENTRIES, request, EntriesPage)

    async def context(self, session_id: str, turn: int) -> TurnContext:
        request = TurnContextRequest(turn=turn)
        return await self._query(session_id, wire.Conversation.TURN_CONTEXT, request, TurnContext)

    async def post(self, session_id: str, post: PostMessage) -> PostResult:
        return await self._update(session_id, wire.Conversation.POST_MESSAGE, post, PostResult)

    async def claim(self, session_id: str, runner: str) -> int | None:
        claim = ClaimTurn(runner=runner)
        result = await self._update(session_id, wire.Conversation.CLAIM_TURN, claim, ClaimResult)
        return result.turn

    async def record(self, session_id: str, record: RecordTurn) -> RecordResult:
        return await self._update(session_id, wire.Conversation.RECORD_TURN, record, RecordResult)

    async def record_task_events(
        self, session_id: str, events: TaskEventsInput
    ) -> TaskEventsResult:
        return await self._update(
            session_id, wire.Conversation.RECORD_TASK_EVENTS, events, TaskEventsResult
        )

    async def close(self, session_id: str, by: str) -> SessionState:
        return await self._update(
            session_id, wire.Conversation.CLOSE, CloseSession(by=by), SessionState
        )

    # ---- internals --------------------------------------------------------------------

    def _handle(self, session_id: str) -> WorkflowHandle[Any, Any]:
        if not _SESSION_ID.match(session_id):
            raise SessionNotFound(_not_found(session_id))
        return self._client.get_workflow_handle(session_id)

    async def _query(self, session_id: str, name: str, arg: Any, result_type: type[R]) -> R:
        handle = self._handle(session_id)
        async with self._errors(session_id):
            if arg is None:
                result: R = await handle.query(
                    name, result_type=result_type, rpc_timeout=QUERY_TIMEOUT
                )
            else:
                result = await handle.query(
                    name, arg, result_type=result_type, rpc_timeout=QUERY_TIMEOUT
                )
        return result

    async def _update(self, session_id: str, name: str, arg: Any, result_type: type[R]) -> R:
        handle = self._handle(session_id)
        async with self._errors(session_id):
            result: R = await handle.execute_update(
                name, arg, result_type=result_type, rpc_timeout=UPDATE_TIMEOUT
            )
        return result


def _open_sessions(owner: str) -> str:
    return (
        f"WorkflowType = '{wire.Conversation.WORKFLOW}' AND "
        f"{wire.SearchAttributes.OWNER.name} = '{_escape(owner)}' AND "
        "ExecutionStatus = 'Running'"
    )


def _not_found(session_id: str) -> str:
    return f"no session {session_id!r}: create one with POST /v1/sessions"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")
