"""What a gateway holds for one session it serves: its hub, tasks, watchers and turn lock.

All of it is a cache of the session's workflow, rebuilt by `Gateway` on activation;
the methods here keep it in step with what the gateway records.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

from chat_gateway._hub import SessionHub, TaskUpdate
from chat_gateway._store import SessionStore
from chat_gateway._watch import TaskWatcher
from switchboard.conversation import (
    NewEntry,
    SessionEntry,
    SessionState,
    SessionTask,
    TaskEventsInput,
    TurnContext,
    is_notable,
    select_context,
    task_event_entry,
)
from switchboard.identity import Identity, local_identity
from switchboard.models import Model, TaskEvent, TaskStatus

__all__ = ["ActiveSession", "Caller", "SessionInfo", "as_identity"]

Caller = Identity | str
"""Who speaks: the verified identity (the API), or a bare name, which is a local-mode
caller (`local_identity`: requester and approver; tests and the in-process demo)."""


def as_identity(caller: Caller) -> Identity:
    return caller if isinstance(caller, Identity) else local_identity(caller)


class SessionInfo(Model):
    session_id: str
    owner: str
    repo: str | None = None
    title: str = ""


@dataclass
class ActiveSession:
    session_id: str
    facts: SessionState
    """The session as it was when this gateway started serving it (owner, repo, summary)."""
    hub: SessionHub
    caller: Identity
    """The owner as last verified by a request; the session's tools act with its roles."""
    tasks: dict[str, SessionTask] = field(default_factory=dict)
    """The session's tasks with their latest recorded phase, kept up to date here."""
    turn_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    watchers: dict[str, TaskWatcher] = field(default_factory=dict)
    closed: bool = False

    @property
    def owner(self) -> str:
        return self.facts.owner

    def settled(self) -> bool:
        """No turn running here and every watcher caught up: a new turn's context is
        what this gateway holds."""
        return not self.turn_lock.locked() and all(w.is_caught_up for w in self.watchers.values())

    def context(self, entry: NewEntry, model: str | None) -> TurnContext:
        """The context the workflow would give the next turn, from what this gateway holds."""
        hub = self.hub
        turn = max((e.turn for e in hub.recent if e.turn is not None), default=0) + 1
        user = SessionEntry(
            offset=hub.next_offset, at=datetime.now(UTC), turn=turn, **entry.model_dump()
        )
        return TurnContext(
            session_id=self.session_id,
            turn=turn,
            model=model,
            owner=self.owner,
            repo=self.facts.repo,
            summary=self.facts.summary,
            entries=select_context([*hub.recent, user], turn),
            tasks=list(self.tasks.values()),
        )

    def live_statuses(self) -> dict[str, TaskStatus]:
        tasks, _, _ = self.hub.snapshot()
        return {t.task_id: t.status for t in tasks if t.status is not None}

    async def record_task(
        self,
        store: SessionStore,
        task_id: str,
        events: list[TaskEvent],
        status: TaskStatus | None,
        next_offset: int,
    ) -> None:
        """Show a task's progress live and record its notable events in the session."""
        self.hub.task(TaskUpdate(task_id=task_id, status=status, events=events))
        notable = [e for e in events if is_notable(e)]
        final = status is not None and status.phase.is_final
        if not notable and not final:
            return
        result = await store.record_task_events(
            self.session_id,
            TaskEventsInput(
                task_id=task_id,
                events=notable,
                next_offset=next_offset,
                phase=status.phase if status is not None else None,
            ),
        )
        accepted = set(result.accepted)
        new = [task_event_entry(task_id, e) for e in notable if e.offset in accepted]
        self.hub.offer(result.stamp.entries(new, None))
        known = self.tasks.get(task_id)
        if known is not None and status is not None:
            self.tasks[task_id] = known.model_copy(
                update={"phase": status.phase, "cursor": max(known.cursor, next_offset)}
            )
