"""`ConversationWorkflow`: one durable chat session.

It holds what the gateway must never be the only one to know: the session's
entries (messages, tool results, notable task events) under dense offsets, the
tasks the session started and how far their events are recorded, and the turns
waiting for an answer and which gateway runs each. Model calls are not made
here: the gateway streams them, so the chat never waits on a workflow task and
this code stays deterministic. A gateway that dies mid-turn leaves the turn
claimed; the next one (the same runner at once, another after `TURN_LEASE`)
claims it and answers from the recorded steps. A record naming its step may be
sent before the one it follows is acknowledged; the session applies them in order
(`workflows/_turns.py`).

Idle sessions end: with `idle_seconds` set, a session with no message and no
turn for that long closes itself (a workflow timer; its history is kept, its
tasks run on). Bounded: the newest `max_entries` entries stay in state (readers asking for
older offsets get one `gap` entry), and past `max_history_events` (or when the
server suggests it) the run continues as new with the newest entries, a
summary of the rest, the tasks and the open turns. Offsets go on growing.
"""

from __future__ import annotations

from collections import deque
from contextlib import suppress
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from switchboard.conversation import (
        ClaimResult,
        ClaimTurn,
        CloseSession,
        EntriesPage,
        EntriesRequest,
        EntryKind,
        NewEntry,
        PostMessage,
        PostResult,
        RecordResult,
        RecordTurn,
        SessionCarry,
        SessionEntry,
        SessionStart,
        SessionState,
        SessionTask,
        Stamp,
        TaskEventsInput,
        TaskEventsResult,
        TurnContext,
        TurnContextRequest,
        TurnState,
        select_context,
        task_event_entry,
    )
    from switchboard.wire import Conversation, Errors
    from workflows._turns import TURN_LEASE, Turns
CARRY_ENTRIES = 200
CARRY_CHARS = 400_000
"""What continue-as-new carries over: well under the 2 MB payload limit."""
MAX_HISTORY_BYTES = 4 * 1024 * 1024
"""The server suggests continue-as-new at 4 MiB; do it no later than that."""
MAX_TASKS = 500
SEEN_REQUESTS = 256
"""Idempotency keys of recent posts remembered (a retry comes within seconds)."""


@workflow.defn(name=Conversation.WORKFLOW, sandboxed=False)
class ConversationWorkflow:
    """Runs outside the SDK's workflow sandbox: every chat message is one or two updates of
    this workflow, and the sandbox's per-activation cost (the workflow's code re-entered through
    restricted importers) was a third of a message's CPU in the worker (15 against 10 ms a turn,
    tests/timeskip/test_long_chat.py). The code here is plain state over pydantic models with no
    I/O, clock or randomness; the replay tests run it inside the sandbox, so a restricted call
    still fails CI (tests/unit/test_replay.py, tests/timeskip/test_session_idle.py)."""

    @workflow.init
    def __init__(self, start: SessionStart) -> None:
        self._session_id = workflow.info().workflow_id
        self._start = start.model_copy(update={"carry": None})
        carry = start.carry
        self._entries: deque[SessionEntry] = deque(carry.entries if carry else ())
        self._next_offset = carry.next_offset if carry else 0
        self._summary = carry.summary if carry else ""
        self._tasks: dict[str, SessionTask] = {t.task_id: t for t in (carry.tasks if carry else ())}
        self._turns = Turns(list(carry.turns) if carry else [])
        self._next_turn = carry.next_turn if carry else 1
        self._created_at = carry.created_at if carry else workflow.now()
        self._runs = carry.runs + 1 if carry else 1
        self._seen: dict[str, int] = dict(carry.seen_requests) if carry else {}
        self._closed = False
        self._last_active = workflow.now()  # every post and turn step: the idle clock

    @workflow.run
    async def run(self, start: SessionStart) -> SessionState:
        await self._until_closed_or_due()
        # A pipelined record may still wait for the ones before it (at most `TURN_LEASE`).
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._closed:
            return self.state()
        workflow.continue_as_new(self._start.model_copy(update={"carry": self._carry()}))

    # ---- updates ----------------------------------------------------------------------

    @workflow.update(name=Conversation.POST_MESSAGE)
    def post_message(self, post: PostMessage) -> PostResult:
        if post.request_id is not None and post.request_id in self._seen:
            return self._duplicate(post.request_id)
        turn = self._next_turn
        self._next_turn += 1
        entry = NewEntry(role="user", content=post.content, by=post.by)
        stamp = self._append([entry], turn)
        self._turns.add(TurnState(turn=turn, user_offset=stamp.first_offset, model=post.model))
        if post.request_id is not None:
            self._seen[post.request_id] = stamp.first_offset
            while len(self._seen) > SEEN_REQUESTS:
                del self._seen[next(iter(self._seen))]
        claimed = self._turns.claim(post.runner, workflow.now()) == turn
        self._last_active = workflow.now()
        return PostResult(stamp=stamp, turn=turn, claimed=claimed)

    @post_message.validator
    def _check_post(self, post: PostMessage) -> None:
        self._require_open()
        if post.by != self._start.owner:
            raise ApplicationError(
                f"only the session's owner ({self._start.owner}) may post to it",
                type=Errors.INVALID_INPUT,
            )

    @workflow.update(name=Conversation.CLAIM_TURN)
    def claim_turn(self, claim: ClaimTurn) -> ClaimResult:
        return ClaimResult(turn=self._turns.claim(claim.runner, workflow.now()))

    @claim_turn.validator
    def _check_claim(self, claim: ClaimTurn) -> None:
        self._require_open()

    @workflow.update(name=Conversation.RECORD_TURN)
    async def record_turn(self, record: RecordTurn) -> RecordResult:
        if not self._turns.ready(record):  # a pipelined record: the ones before it first
            await self._records_before(record)
        self._last_active = workflow.now()
        self._turns.step(workflow.now())
        for task in record.tasks:
            if task.task_id not in self._tasks:
                self._tasks[task.task_id] = task.model_copy(
                    update={"turn": record.turn, "created_at": workflow.now()}
                )
        while len(self._tasks) > MAX_TASKS:
            del self._tasks[next(iter(self._tasks))]
        stamp = self._append(record.entries, record.turn)
        next_turn = None
        if record.finish:
            next_turn = self._turns.finish(record.runner, workflow.now())
        return RecordResult(stamp=stamp, next_turn=next_turn)

    @record_turn.validator
    def _check_record(self, record: RecordTurn) -> None:
        self._require_open()
        refusal = self._turns.refusal(record)
        if refusal:
            raise ApplicationError(refusal, type=Errors.WRONG_PHASE)

    @workflow.update(name=Conversation.RECORD_TASK_EVENTS)
    def record_task_events(self, update: TaskEventsInput) -> TaskEventsResult:
        task = self._tasks[update.task_id]
        fresh = [e for e in update.events if e.offset >= task.cursor]
        stamp = self._append([task_event_entry(task.task_id, e) for e in fresh], None)
        task.cursor = max(task.cursor, update.next_offset)
        if update.phase is not None:
            task.phase = update.phase
        return TaskEventsResult(stamp=stamp, accepted=[e.offset for e in fresh])

    @record_task_events.validator
    def _check_task_events(self, update: TaskEventsInput) -> None:
        if update.task_id not in self._tasks:
            raise ApplicationError(
                f"{update.task_id} was not started by this session", type=Errors.INVALID_INPUT
            )

    @workflow.update(name=Conversation.CLOSE)
    def close(self, close: CloseSession) -> SessionState:
        self._closed = True
        return self.state()

    @close.validator
    def _check_close(self, close: CloseSession) -> None:
        if close.by != self._start.owner:
            raise ApplicationError(
                f"only the session's owner ({self._start.owner}) may close it",
                type=Errors.INVALID_INPUT,
            )

    # ---- queries ----------------------------------------------------------------------

    @workflow.query(name=Conversation.STATE)
    def state(self) -> SessionState:
        return SessionState(
            session_id=self._session_id,
            owner=self._start.owner,
            repo=self._start.repo,
            title=self._start.title,
            created_at=self._created_at,
            next_offset=self._next_offset,
            first_offset=self._first_offset(),
            summary=self._summary,
            tasks=list(self._tasks.values()),
            turns=list(self._turns.open),
            runs=self._runs,
            closed=self._closed,
        )

    @workflow.query(name=Conversation.ENTRIES)
    def entries(self, request: EntriesRequest) -> EntriesPage:
        first = self._first_offset()
        out: list[SessionEntry] = []
        start = request.from_offset
        if start < first:
            out.append(
                SessionEntry(
                    offset=start,
                    at=self._entries[0].at if self._entries else self._created_at,
                    kind=EntryKind.GAP,
                    content=f"{first - start} older entries are no longer kept",
                    data={"dropped": first - start, "resume_offset": first},
                )
            )
            start = first
        skip = start - first
        for index, entry in enumerate(self._entries):
            if index < skip:
                continue
            if len(out) >= request.limit:
                break
            out.append(entry)
        next_offset = out[-1].offset + 1 if out else max(start, first)
        if out and out[-1].kind is EntryKind.GAP:
            next_offset = first
        return EntriesPage(entries=out, next_offset=next_offset, first_offset=first)

    @workflow.query(name=Conversation.TURN_CONTEXT)
    def turn_context(self, request: TurnContextRequest) -> TurnContext:
        head = self._turns.find(request.turn)
        return TurnContext(
            session_id=self._session_id,
            turn=request.turn,
            runner=head.runner if head else None,
            model=head.model if head else None,
            owner=self._start.owner,
            repo=self._start.repo,
            summary=self._summary,
            entries=select_context(self._entries, request.turn),
            tasks=list(self._tasks.values()),
        )

    # ---- internals --------------------------------------------------------------------

    async def _until_closed_or_due(self) -> None:
        """Wait for a close or continue-as-new; close the session once it idles too long.

        One timer per quiet stretch, not one per message: when it fires, the time since
        the last post or turn step says whether to close or to sleep the rest. (A timer
        restarted on every update added a started and a cancelled event to each one.)
        """

        def done() -> bool:
            return self._closed or self._should_continue_as_new()

        idle = self._start.idle_seconds
        while not done():
            if idle is None:
                await workflow.wait_condition(done)
                return
            quiet = (workflow.now() - self._last_active).total_seconds()
            if quiet >= idle:
                if not self._turns.open:  # a turn being answered is not idle
                    self._close_idle(idle)
                    return
                self._last_active = workflow.now()
                continue
            with suppress(TimeoutError):
                await workflow.wait_condition(done, timeout=timedelta(seconds=idle - quiet))

    def _close_idle(self, idle: float) -> None:
        self._append(
            [
                NewEntry(
                    kind=EntryKind.NOTICE,
                    role="system",
                    content=f"this session closed itself after {idle / 3600:g} hours without "
                    "a message; its history is kept and its tasks go on (see /v1/tasks)",
                    data={"closed": "idle", "idle_seconds": idle},
                )
            ],
            None,
        )
        self._closed = True

    def _append(self, new: list[NewEntry], turn: int | None) -> Stamp:
        stamp = Stamp(first_offset=self._next_offset, at=workflow.now(), count=len(new))
        for entry in stamp.entries(new, turn):
            self._entries.append(entry)
        self._next_offset += len(new)
        while len(self._entries) > self._start.max_entries:
            self._forget(self._entries.popleft())
        return stamp

    def _forget(self, entry: SessionEntry) -> None:
        # Deterministic and short: a count of what fell out of the window. The tasks
        # stay listed in full, so the model never loses track of its work.
        self._summary = f"Entries before offset {entry.offset + 1} are no longer in context."

    async def _records_before(self, record: RecordTurn) -> None:
        """Wait (up to `TURN_LEASE`) for the records a pipelined one follows; refuse it
        when they never come or the turn goes on without it."""
        with suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._closed or self._turns.ready(record) or self._turns.passed(record),
                timeout=TURN_LEASE,
                timeout_summary="a pipelined record waits for the records before it",
            )
        self._require_open()
        if not self._turns.ready(record):
            raise ApplicationError(
                f"step {record.step} of turn {record.turn} by {record.runner} was not "
                "recorded: the records before it did not come, or the turn went on without it",
                type=Errors.WRONG_PHASE,
            )

    def _duplicate(self, request_id: str) -> PostResult:
        offset = self._seen[request_id]
        entry = next((e for e in self._entries if e.offset == offset), None)
        if entry is None or entry.turn is None:
            raise ApplicationError(
                f"message {request_id!r} was posted long ago; post it again with a new id",
                type=Errors.INVALID_INPUT,
            )
        stamp = Stamp(first_offset=entry.offset, at=entry.at, count=1)
        return PostResult(stamp=stamp, turn=entry.turn, duplicate=True)

    def _require_open(self) -> None:
        if self._closed:
            raise ApplicationError("this session is closed", type=Errors.WRONG_PHASE)

    def _first_offset(self) -> int:
        return self._entries[0].offset if self._entries else self._next_offset

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self._start.max_history_events
            or info.get_current_history_size() >= MAX_HISTORY_BYTES
        )

    def _carry(self) -> SessionCarry:
        kept: list[SessionEntry] = []
        chars = 0
        for entry in reversed(self._entries):
            chars += len(entry.content) + 200
            if len(kept) >= CARRY_ENTRIES or chars > CARRY_CHARS:
                break
            kept.append(entry)
        kept.reverse()
        dropped = len(self._entries) - len(kept)
        summary = self._summary
        if dropped and kept:
            summary = f"Entries before offset {kept[0].offset} are no longer in context."
        return SessionCarry(
            entries=kept,
            next_offset=self._next_offset,
            summary=summary,
            tasks=list(self._tasks.values()),
            turns=self._turns.open,
            next_turn=self._next_turn,
            created_at=self._created_at,
            runs=self._runs,
            seen_requests=self._seen,
        )
