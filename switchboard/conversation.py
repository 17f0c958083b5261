"""The conversation's domain: sessions, their durable entries, turns, and wire names.

A chat session is one `ConversationWorkflow` (`workflows/conversation.py`); the
gateway (`chat_gateway/`) talks to it with the updates and queries named here.
Both sides import this module, which is why it lives in `switchboard` (the only
package both may depend on) and holds pure pydantic models only.

The session's stream is offset-addressed: every entry (a user or assistant
message, a tool result, a notable task event, a notice) gets the next offset,
and offsets only grow, across continue-as-new too. Model tokens are not
entries: they are live previews of the assistant message that follows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import Field, field_validator
from ulid import ULID

from switchboard.contracts import ChatToolCall
from switchboard.models import MAX_GOAL_CHARS, EventKind, Model, Phase, TaskEvent

__all__ = [
    "CONTEXT_CHARS",
    "CONTEXT_ENTRIES",
    "CONVERSATION_QUEUE_SUFFIX",
    "MAX_MESSAGE_CHARS",
    "SESSION_ID_PREFIX",
    "ClaimResult",
    "ClaimTurn",
    "CloseSession",
    "EntriesPage",
    "EntriesRequest",
    "EntryKind",
    "NewEntry",
    "PostMessage",
    "PostResult",
    "RecordResult",
    "RecordTurn",
    "SessionCarry",
    "SessionEntry",
    "SessionStart",
    "SessionState",
    "SessionTask",
    "Stamp",
    "TaskEventsInput",
    "TaskEventsResult",
    "TurnContext",
    "TurnContextRequest",
    "TurnState",
    "conversation_queue",
    "is_notable",
    "new_session_id",
    "select_context",
    "session_id_for",
    "task_event_entry",
]

SESSION_ID_PREFIX: Final = "session-"
CONVERSATION_QUEUE_SUFFIX: Final = "-chat"

MAX_MESSAGE_CHARS: Final = 32_000
"""One user message; a 1 MB paste is refused (422), never truncated silently."""
CONTEXT_ENTRIES: Final = 120
CONTEXT_CHARS: Final = 60_000
"""The model sees at most this much of the session's tail (plus the summary and tasks)."""
MAX_ENTRY_CHARS: Final = 16_000
"""Tool results (a diff, a task list) are clipped to this before they are recorded:
entries travel through history, and diffs belong in git (read them with show_diff)."""


class EntryKind(StrEnum):
    MESSAGE = "message"
    TASK_EVENT = "task_event"
    NOTICE = "notice"
    GAP = "gap"


Role = Literal["user", "assistant", "tool", "system"]


class NewEntry(Model):
    """An entry as the gateway writes it; the workflow stamps offset and time."""

    kind: EntryKind = EntryKind.MESSAGE
    role: Role | None = None
    content: str = Field(default="", max_length=MAX_ENTRY_CHARS)
    by: str | None = None
    step: int | None = None
    tool_calls: list[ChatToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    tool_name: str | None = None
    is_error: bool = False
    ends_turn: bool = False
    """The last entry of a turn: its answer is complete."""
    task_id: str | None = None
    task_offset: int | None = None
    event: EventKind | None = None
    phase: Phase | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class SessionEntry(NewEntry):
    """One durable item of the session's stream."""

    offset: int
    at: datetime
    turn: int | None = None


class SessionTask(Model):
    """A task this session started, and how far its events are recorded here."""

    task_id: str
    goal: str = Field(default="", max_length=MAX_GOAL_CHARS)
    turn: int | None = None
    phase: Phase = Phase.PREPARING
    cursor: int = 0
    """The next task event offset not yet looked at (events before it are recorded)."""
    created_at: datetime | None = None


class TurnState(Model):
    """A user message waiting for, or getting, its answer."""

    turn: int
    user_offset: int
    model: str | None = None
    runner: str | None = None
    claimed_at: datetime | None = None
    steps: int = 0
    """Records applied to this turn so far (a pipelined record names its `step`)."""


class SessionStart(Model):
    owner: str = Field(min_length=1, max_length=200)
    repo: str | None = Field(default=None, max_length=2000)
    title: str = Field(default="", max_length=200)
    max_history_events: int = Field(default=2_000, ge=50, le=40_000)
    """Continue-as-new past this many history events (the server warns at 10,240)."""
    max_entries: int = Field(default=1_000, ge=20, le=10_000)
    """Entries kept in state; older ones are summarised and answered with a `gap`."""
    idle_seconds: float | None = Field(default=None, gt=0)
    """Close the session after this long with no message and no turn (None: never)."""
    carry: SessionCarry | None = None


class SessionCarry(Model):
    """What one run hands the next through continue-as-new."""

    entries: list[SessionEntry]
    next_offset: int
    summary: str = ""
    tasks: list[SessionTask] = Field(default_factory=list)
    turns: list[TurnState] = Field(default_factory=list)
    next_turn: int = 1
    created_at: datetime
    runs: int = 1
    seen_requests: dict[str, int] = Field(default_factory=dict)


class PostMessage(Model):
    by: str = Field(min_length=1, max_length=200)
    content: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    runner: str = Field(min_length=1, max_length=200)
    model: str | None = Field(default=None, max_length=200)
    request_id: str | None = Field(default=None, max_length=200)
    """Client idempotency key: a retried post records the message once."""

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the message is blank")
        return value


class TurnContextRequest(Model):
    turn: int


class TurnContext(Model):
    """Everything a runner needs to answer one turn (the model sees `entries`).

    Read with a query, never returned by an update: update results are stored in
    history, and a context repeated every turn would fill it.
    """

    session_id: str
    turn: int
    runner: str | None = None
    model: str | None = None
    owner: str
    repo: str | None = None
    summary: str = ""
    entries: list[SessionEntry]
    tasks: list[SessionTask]


class Stamp(Model):
    """Where the workflow put the entries it was given: consecutive offsets from
    `first_offset`, all at `at` (the writer already holds their content)."""

    first_offset: int
    at: datetime
    count: int

    def entries(self, new: list[NewEntry], turn: int | None) -> list[SessionEntry]:
        assert len(new) == self.count, "a stamp covers exactly the entries it was given"
        return [
            SessionEntry(offset=self.first_offset + i, at=self.at, turn=turn, **e.model_dump())
            for i, e in enumerate(new)
        ]


class PostResult(Model):
    stamp: Stamp
    turn: int
    duplicate: bool = False
    claimed: bool = False
    """True when this runner got the turn now; False when it waits behind another."""


class CloseSession(Model):
    by: str = Field(min_length=1, max_length=200)


class ClaimTurn(Model):
    runner: str = Field(min_length=1, max_length=200)


class ClaimResult(Model):
    turn: int | None = None


class RecordTurn(Model):
    turn: int
    runner: str
    entries: list[NewEntry] = Field(default_factory=list, max_length=64)
    tasks: list[SessionTask] = Field(default_factory=list, max_length=32)
    finish: bool = False
    step: int | None = Field(default=None, ge=0)
    """How many records of this turn the runner sent before this one. With it, a record
    may be sent before the one it follows is acknowledged (for a later turn, before the
    turn before it is finished): the session applies records in step order, waiting up to
    `TURN_LEASE` for the ones before. Without it, the record must follow its predecessor's
    acknowledgement (the turn must be the one being answered when it arrives)."""


class RecordResult(Model):
    stamp: Stamp
    next_turn: int | None = None
    """After `finish`: the next waiting turn, now claimed for the same runner."""


class TaskEventsInput(Model):
    task_id: str
    events: list[TaskEvent] = Field(default_factory=list, max_length=500)
    next_offset: int
    phase: Phase | None = None


class TaskEventsResult(Model):
    stamp: Stamp
    accepted: list[int] = Field(default_factory=list)
    """Task offsets of the events recorded (older ones were recorded before)."""


class EntriesRequest(Model):
    from_offset: int = Field(default=0, ge=0)
    limit: int = Field(default=500, ge=1, le=2000)


class EntriesPage(Model):
    entries: list[SessionEntry]
    next_offset: int
    first_offset: int = 0


class SessionState(Model):
    session_id: str
    owner: str
    repo: str | None = None
    title: str = ""
    created_at: datetime
    next_offset: int
    first_offset: int
    summary: str = ""
    tasks: list[SessionTask] = Field(default_factory=list)
    turns: list[TurnState] = Field(default_factory=list)
    runs: int = 1
    closed: bool = False


SessionStart.model_rebuild()

# Task events that enter the conversation (and the model's context); the others
# (subagent steps, denied calls) only move the live task panel.
_NOTABLE = frozenset(
    {
        EventKind.PLAN,
        EventKind.SUBAGENT_FINISHED,
        EventKind.STEERED,
        EventKind.DIFF_READY,
        EventKind.APPROVAL_NEEDED,
        EventKind.APPROVED,
        EventKind.CHANGES_REQUESTED,
        EventKind.REJECTED,
        EventKind.MERGED,
        EventKind.MERGE_CONFLICT,
        EventKind.TARGET_MOVED,
        EventKind.CANCELLED,
        EventKind.FAILED,
        EventKind.COMPLETED,
        EventKind.GAP,
    }
)
_NOTABLE_PHASES = frozenset({Phase.RUNNING, Phase.REVIEWING, Phase.MERGING})


def is_notable(event: TaskEvent) -> bool:
    """Whether a task event belongs in the conversation, not just the task panel."""
    if event.kind is EventKind.REVIEW:
        return "verdict" in event.data  # the verdict, not each reviewer step
    if event.kind is EventKind.PHASE:
        # The other phases are announced by their own event (plan, approval_needed, ...).
        return event.data.get("phase") in _NOTABLE_PHASES
    return event.kind in _NOTABLE


def conversation_queue(task_queue: str) -> str:
    """The task queue of the conversation workflows beside a deployment's shared queue.

    Chats get their own queue (and pollers) so a chat turn's workflow task never
    waits behind the workflow tasks of many running tasks.
    """
    return f"{task_queue}{CONVERSATION_QUEUE_SUFFIX}"


def new_session_id() -> str:
    return f"{SESSION_ID_PREFIX}{ULID()}"


def session_id_for(owner: str, key: str) -> str:
    """The session a client key (the OpenAI `user` field) always maps to for one owner."""
    digest = hashlib.sha256(f"{owner}\n{key}".encode()).digest()
    return f"{SESSION_ID_PREFIX}{ULID.from_bytes(digest[:16])}"


def task_event_entry(task_id: str, event: TaskEvent) -> NewEntry:
    """The entry a notable task event becomes (built the same way on both sides)."""
    return NewEntry(
        kind=EntryKind.TASK_EVENT,
        role="system",
        content=event.message[:MAX_ENTRY_CHARS],
        task_id=task_id,
        task_offset=event.offset,
        event=event.kind,
        phase=event.phase,
        data=event.data,
    )


def select_context(entries: Iterable[SessionEntry], turn: int) -> list[SessionEntry]:
    """The tail of the session a model answering `turn` sees, oldest first.

    The same rule in the workflow's `turn_context` query and in a gateway that
    builds the context from the entries it holds: the newest entries within
    `CONTEXT_ENTRIES` and `CONTEXT_CHARS`, without gaps and without questions of
    later turns (they wait for their own answer).
    """
    chosen: list[SessionEntry] = []
    chars = 0
    for entry in reversed(list(entries)):
        if entry.kind is EntryKind.GAP:
            continue
        if entry.turn is not None and entry.turn > turn:
            continue
        chars += len(entry.content)
        if chosen and (len(chosen) >= CONTEXT_ENTRIES or chars > CONTEXT_CHARS):
            break
        chosen.append(entry)
    chosen.reverse()
    return chosen
