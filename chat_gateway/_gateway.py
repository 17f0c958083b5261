"""The gateway: sessions, turns, task watchers and event streams, transport-agnostic.

Stateless by design: everything it knows it read from a workflow, and anything
it must not forget it wrote to one before telling a client. What it keeps in
memory per active session (a hub, watchers, a turn lock) is rebuilt on demand
after a restart: `activate` reads the session's state, resumes watching its
live tasks from their recorded cursors, and resumes any turn left unanswered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import openai
from temporalio.client import Client

from chat_gateway._active import ActiveSession, Caller, SessionInfo, as_identity
from chat_gateway._background import Background, consume
from chat_gateway._hub import StreamItem
from chat_gateway._store import SessionNotFound, SessionStore, SessionSummary
from chat_gateway._streams import SessionStreams, answer_text
from chat_gateway._turns import Prefetch, TurnHooks, TurnRunner
from chat_gateway._watch import TaskWatcher
from switchboard.conversation import (
    NewEntry,
    PostMessage,
    PostResult,
    SessionStart,
    SessionState,
    SessionTask,
    TurnContext,
    new_session_id,
    session_id_for,
)
from switchboard.credentials import CredentialStore
from switchboard.errors import WrongPhase
from switchboard.identity import Identity
from switchboard.llm_client import GATEWAY_RETRIES, openai_client
from switchboard.models import TaskEvent, TaskStatus
from switchboard.service import TaskService
from switchboard.settings import Settings

__all__ = ["Caller", "Gateway", "SessionInfo"]


CATCH_UP_SECONDS = 1.0
"""Before the first turn after activation, let watchers record what the tasks did
while no gateway watched (bounded: a turn never waits long on a task)."""


class Gateway:
    """The conversation engine behind every surface (SSE, WebSocket, OpenAI, CLI).

    Args:
        client: A Temporal client with the pydantic data converter.
        settings: Task queue, model endpoint and host id.
        service: The task facade (one is made from `client` when omitted).
        runner: This gateway's id in the sessions' turn claims. A gateway
            restarted on the same host keeps its id and so resumes its own
            interrupted turns at once; another waits out the claim's lease.
        llm: The conversation model client (made from `settings` when omitted).
    """

    def __init__(
        self,
        client: Client,
        settings: Settings,
        service: TaskService | None = None,
        *,
        runner: str | None = None,
        llm: openai.AsyncOpenAI | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._credentials = CredentialStore(settings.credentials_dir)
        self._service = service or TaskService(client, settings)
        self._store = SessionStore(client, settings)
        self._streams = SessionStreams(self._store)
        self._owns_llm = llm is None
        self._llm = llm or openai_client(settings, max_retries=GATEWAY_RETRIES)
        self.runner = runner or f"gateway-{settings.host_id}"
        self._turns = TurnRunner(
            self._store, self._service, self._llm, settings.llm_model, self.runner
        )
        self._sessions: dict[str, ActiveSession] = {}
        self._activating: dict[str, asyncio.Future[ActiveSession]] = {}
        self._background = Background()
        self._closed = False

    @property
    def service(self) -> TaskService:
        return self._service

    @property
    def store(self) -> SessionStore:
        return self._store

    async def aclose(self) -> None:
        """Stop every watcher and turn (they resume wherever the gateway runs next)."""
        self._closed = True
        for active in self._sessions.values():
            active.hub.close()
        await self._background.aclose()
        if self._owns_llm:
            await self._llm.close()

    # ---- sessions ---------------------------------------------------------------------

    async def create_session(
        self,
        owner: str,
        *,
        repo: str | None = None,
        title: str = "",
        key: str | None = None,
        max_history_events: int | None = None,
    ) -> SessionInfo:
        """Start a session; with `key`, the owner's session for that key (made once).

        Raises:
            TooManySessions: The owner holds `max_open_sessions_per_user` open sessions.
        """
        session_id = session_id_for(owner, key) if key is not None else new_session_id()
        if repo is not None:  # its credentials stay in the store, never in the session
            repo = await asyncio.to_thread(self._credentials.remember, owner, repo)
        limit = self._settings.max_open_sessions_per_user
        await self._store.check_quota(owner, limit, session_id if key is not None else None)
        start = SessionStart(
            owner=owner,
            repo=repo,
            title=title,
            idle_seconds=self._settings.session_idle_hours * 3600,
        )
        if max_history_events is not None:
            start.max_history_events = max_history_events
        await self._store.start(session_id, start)
        return SessionInfo(session_id=session_id, owner=owner, repo=repo, title=title)

    async def session_for_key(self, owner: str, key: str, *, repo: str | None = None) -> str:
        """The owner's session for a client key (made on first use; then one lookup)."""
        session_id = session_id_for(owner, key)
        if session_id not in self._sessions:
            await self.create_session(owner, repo=repo, key=key)
        return session_id

    async def open(self, session_id: str, user: Caller) -> None:
        """Check the session is `user`'s and open, and start serving it here.

        Raises:
            SessionNotFound: No such session, or not `user`'s.
            WrongPhase: The session is closed.
        """
        await self._activate(session_id, user)

    async def sessions(self, owner: str, limit: int = 50) -> list[SessionSummary]:
        return await self._store.list(owner, limit)

    async def state(self, session_id: str, user: str) -> SessionState:
        state = await self._store.state(session_id)
        if state.owner != user:
            raise SessionNotFound(f"no session {session_id!r}")
        return state

    async def close_session(self, session_id: str, user: str) -> SessionState:
        await self.state(session_id, user)
        state = await self._store.close(session_id, user)
        active = self._sessions.pop(session_id, None)
        if active is not None:
            active.closed = True
            active.hub.close()
        return state

    # ---- messages ---------------------------------------------------------------------

    async def post(
        self,
        session_id: str,
        user: Caller,
        content: str,
        *,
        model: str | None = None,
        request_id: str | None = None,
    ) -> PostResult:
        """Record the user's message and start answering it; returns once it is durable.

        A repository URL with credentials in it is recorded (and shown to the model)
        without them; they stay in the credential store for this user's tasks of it.
        """
        active = await self._activate(session_id, user)
        user = active.owner
        if "@" in content:
            content = await asyncio.to_thread(self._credentials.redact_text, user, content)
        post = PostMessage(
            by=user, content=content, runner=self.runner, model=model, request_id=request_id
        )
        entry = NewEntry(role="user", content=content, by=user)
        guess: TurnContext | None = None
        prefetch: Prefetch | None = None
        if active.settled():
            guess = active.context(entry, model)
            prefetch = self._turns.prefetch(guess)
        try:
            result = await self._store.post(session_id, post)
        except SessionNotFound:
            if prefetch is not None:
                prefetch.cancel()
            await self._closed_meanwhile(session_id)
            raise
        except BaseException:
            if prefetch is not None:
                prefetch.cancel()
            raise
        user_entry = result.stamp.entries([entry], result.turn)
        active.hub.offer(user_entry)
        if not result.claimed or result.duplicate:
            if prefetch is not None:
                prefetch.cancel()
            return result
        context = None
        if guess is not None and guess.turn == result.turn:
            context = guess.model_copy(
                update={"runner": self.runner, "entries": [*guess.entries[:-1], *user_entry]}
            )
        elif prefetch is not None:
            prefetch.cancel()
            prefetch = None
        self._background.spawn(self._answer(active, result.turn, context, prefetch))
        return result

    async def _closed_meanwhile(self, session_id: str) -> None:
        """Raise `WrongPhase` if the session's workflow ended (it closed itself when idle)."""
        try:
            await self._store.owner(session_id)
        except WrongPhase:
            active = self._sessions.pop(session_id, None)
            if active is not None:
                active.closed = True
                active.hub.close()
            raise

    async def ask(
        self,
        session_id: str,
        user: Caller,
        content: str,
        *,
        model: str | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[str]:
        """Post a message and yield its answer's text as it streams (one turn).

        For clients that see one answer per message (the OpenAI endpoint): the
        notable task events since the previous answer come first, as a short
        "Task updates" block, then the model's text of every step of the turn.

        Raises:
            ModelCallFailed: The model did not answer (its notice is recorded too).
        """
        active = await self._activate(session_id, user)
        subscription = active.hub.subscribe()
        try:
            # A client gone mid-post must not strand a claimed turn: the post (which
            # starts the answer) runs to its end even when this generator is cancelled.
            posting = asyncio.ensure_future(
                self.post(session_id, user, content, model=model, request_id=request_id)
            )
            posting.add_done_callback(consume)
            result = await asyncio.shield(posting)
            updates = await self._streams.updates_before(session_id, result.stamp.first_offset)
            if updates:
                yield "Task updates:\n" + "\n".join(updates) + "\n\n"
            async for text in answer_text(subscription, result.turn):
                yield text
        finally:
            active.hub.unsubscribe(subscription)

    # ---- streams ----------------------------------------------------------------------

    async def stream(
        self, session_id: str, user: Caller, from_offset: int = 0
    ) -> AsyncIterator[StreamItem]:
        """The session's stream from `from_offset`: backlog, snapshot, then live.

        Entries come once each in offset order (resume with the last `id` + 1);
        then one `task` item per task, the step being streamed (`draft`) if any,
        and `ready`; then everything live. Tokens of a step already recorded are
        never sent. The stream ends when the client falls too far behind (it
        resumes from its offset) or the gateway stops.
        """
        active = await self._activate(session_id, user)
        subscription = active.hub.subscribe()
        try:
            async for item in self._streams.replay(
                session_id, active.hub, subscription, from_offset
            ):
                yield item
        finally:
            active.hub.unsubscribe(subscription)

    # ---- activation, turns and watchers -------------------------------------------------

    async def _activate(self, session_id: str, user: Caller) -> ActiveSession:
        """The session, checked to be the caller's; its tools act with the caller's roles."""
        caller = as_identity(user)
        active = self._sessions.get(session_id)
        if active is None:
            pending = self._activating.get(session_id)
            if pending is None:
                pending = asyncio.get_running_loop().create_future()
                self._activating[session_id] = pending
                try:
                    active = await self._load(session_id, caller)
                except BaseException as exc:
                    pending.set_exception(exc)
                    pending.exception()  # retrieved: nobody else may be waiting
                    raise
                finally:
                    self._activating.pop(session_id, None)
                pending.set_result(active)
            else:
                active = await asyncio.shield(pending)
        if active.owner != caller.owner:
            raise SessionNotFound(f"no session {session_id!r}: create one with POST /v1/sessions")
        if active.closed:
            raise WrongPhase(f"{session_id} is closed: start a new session")
        active.caller = caller
        return active

    async def _load(self, session_id: str, caller: Identity) -> ActiveSession:
        state = await self._store.state(session_id)
        if state.owner != caller.owner:
            raise SessionNotFound(f"no session {session_id!r}: create one with POST /v1/sessions")
        if state.closed:
            raise WrongPhase(f"{session_id} is closed: start a new session")
        hub = await self._streams.hub(session_id, state)
        tasks = {t.task_id: t for t in state.tasks}
        active = ActiveSession(session_id, state, hub, caller, tasks=tasks)
        self._sessions[session_id] = active
        for task in state.tasks:
            if not task.phase.is_final:
                self._watch(active, task.task_id, task.cursor)
        if state.turns:
            self._background.spawn(self._resume(active))
        return active

    async def _resume(self, active: ActiveSession) -> None:
        turn = await self._store.claim(active.session_id, self.runner)
        if turn is not None:
            await self._answer(active, turn)

    async def _answer(
        self,
        active: ActiveSession,
        turn: int | None,
        context: TurnContext | None = None,
        prefetch: Prefetch | None = None,
    ) -> None:
        async with active.turn_lock:
            await asyncio.gather(*(w.caught_up(CATCH_UP_SECONDS) for w in active.watchers.values()))
            while turn is not None and not self._closed:
                hooks = TurnHooks(
                    status=self._service.status,
                    live=active.live_statuses,
                    started=lambda task: self._started(active, task),
                    caller=active.caller,
                )
                turn = await self._turns.answer(
                    active.session_id,
                    active.hub,
                    turn,
                    hooks,
                    context=context,
                    prefetch=prefetch,
                )
                context, prefetch = None, None

    def _watch(self, active: ActiveSession, task_id: str, cursor: int) -> None:
        if task_id in active.watchers or self._closed:
            return

        async def on_update(
            task_id: str, events: list[TaskEvent], status: TaskStatus | None, next_offset: int
        ) -> None:
            await active.record_task(self._store, task_id, events, status, next_offset)

        watcher = TaskWatcher(self._service, task_id, cursor, on_update)
        active.watchers[task_id] = watcher

        async def run() -> None:
            try:
                await watcher.run()
            finally:
                active.watchers.pop(task_id, None)

        self._background.spawn(run())

    def _started(self, active: ActiveSession, task: SessionTask) -> None:
        active.tasks.setdefault(task.task_id, task)
        self._watch(active, task.task_id, 0)
