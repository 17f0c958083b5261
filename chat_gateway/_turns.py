"""Answering one turn: stream the model, run its tool calls, record each step.

A step is one model call. Its tokens go to the session's clients as they come;
when the model is done, the assistant message is recorded (one update), then
its tool calls run and their results are recorded (one more). A gateway that
dies mid-turn leaves every finished step recorded: the next runner resumes
after the last one and runs any recorded calls that have no results yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple, cast

import openai
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionToolUnionParam,
)

from chat_gateway._hub import SessionHub, TokenDelta
from chat_gateway._model_errors import model_error
from chat_gateway._prompt import build_messages, last_step, unanswered_calls
from chat_gateway._store import SessionStore
from chat_gateway._tool_args import TOOL_SCHEMAS
from chat_gateway._tools import ToolOutcome, ToolScope, run_tool
from switchboard.contracts import ChatToolCall
from switchboard.conversation import (
    EntryKind,
    NewEntry,
    RecordTurn,
    SessionTask,
    TurnContext,
)
from switchboard.errors import WrongPhase
from switchboard.identity import Identity
from switchboard.llm_client import chat_messages
from switchboard.model_server import CALL_ID_HEADER, ROLE_HEADER
from switchboard.models import TaskStatus
from switchboard.service import TaskService

__all__ = ["CONVERSATION_ROLE", "MAX_STEPS", "Prefetch", "TurnHooks", "TurnRunner"]

log = logging.getLogger(__name__)

CONVERSATION_ROLE = "conversation"
MAX_STEPS = 8
"""Model calls per turn; a model that keeps calling tools is stopped with a notice."""

Status = Callable[[str], Awaitable[TaskStatus]]
Started = Callable[[SessionTask], None]
LivePhases = Callable[[], dict[str, TaskStatus]]


class Prefetch:
    """A model stream read ahead into a buffer until a turn takes it over."""

    def __init__(self, stream: AsyncIterator[ChatCompletionChunk]) -> None:
        self._buffer: asyncio.Queue[ChatCompletionChunk | BaseException | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._read(stream))

    async def _read(self, stream: AsyncIterator[ChatCompletionChunk]) -> None:
        try:
            async for chunk in stream:
                self._buffer.put_nowait(chunk)
        except Exception as exc:  # handed to the reader, who reports it in the turn
            self._buffer.put_nowait(exc)
            return
        self._buffer.put_nowait(None)

    async def chunks(self) -> AsyncIterator[ChatCompletionChunk]:
        while True:
            item = await self._buffer.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def cancel(self) -> None:
        self._task.cancel()


class TurnHooks(NamedTuple):
    """What the gateway lends a turn: task statuses, new-task notices, the caller."""

    status: Status
    """Reads a task's status for the tools."""
    live: LivePhases
    """The gateway's live task statuses (fresher phases than recorded)."""
    started: Started
    """Told about each task a tool started, to watch it."""
    caller: Identity
    """The session owner as last verified; the tools act with its roles."""


class _Reply:
    def __init__(self) -> None:
        self.content: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}


class TurnRunner:
    """Runs claimed turns for one gateway (`runner` is its id in the workflow).

    Args:
        store: The conversation workflows.
        service: The task facade the tools use.
        llm: The conversation model's client (streams).
        model: The default model name (a turn may name its own).
        runner: This gateway's runner id.
    """

    def __init__(
        self,
        store: SessionStore,
        service: TaskService,
        llm: openai.AsyncOpenAI,
        model: str,
        runner: str,
    ) -> None:
        self._store = store
        self._service = service
        self._llm = llm
        self._model = model
        self.runner = runner

    async def answer(
        self,
        session_id: str,
        hub: SessionHub,
        turn: int,
        hooks: TurnHooks,
        *,
        context: TurnContext | None = None,
        prefetch: Prefetch | None = None,
    ) -> int | None:
        """Answer `turn` (claimed by this runner); the next turn claimed for it, if any.

        Args:
            session_id: The session.
            hub: Where tokens and recorded entries go.
            turn: The turn.
            hooks: Task statuses, new-task notices and the caller the tools act as.
            context: The turn's context when the caller has it (else it is queried).
            prefetch: The first model call, started before the turn was recorded.
        """
        hub.turn(turn, running=True)
        try:
            return await self._answer(session_id, hub, turn, hooks, context, prefetch)
        except WrongPhase:
            log.info("%s turn %d was taken over by another runner", session_id, turn)
            return None
        finally:
            if prefetch is not None:
                prefetch.cancel()
            hub.turn(turn, running=False)

    def prefetch(self, context: TurnContext) -> Prefetch:
        """Start the first model call of a turn not recorded yet.

        The model's first token takes hundreds of milliseconds on a real endpoint;
        recording the user's message takes one update. Starting both at once hides
        the update behind the model, whatever load the workflows are under. The
        reply is buffered until `answer` takes it (or dropped with `cancel`).
        """
        return Prefetch(self._create(context, f"{context.session_id}/o{context.turn}/1"))

    async def _answer(
        self,
        session_id: str,
        hub: SessionHub,
        turn: int,
        hooks: TurnHooks,
        context: TurnContext | None,
        prefetch: Prefetch | None,
    ) -> int | None:
        if context is None:
            context = await self._store.context(session_id, turn)
        entries = list(context.entries)
        tasks = {t.task_id: t for t in context.tasks}

        async def record(new: list[NewEntry], *, finish: bool = False) -> int | None:
            fresh = _started(new, tasks)
            result = await self._store.record(
                session_id,
                RecordTurn(turn=turn, runner=self.runner, entries=new, tasks=fresh, finish=finish),
            )
            recorded = result.stamp.entries(new, turn)
            entries.extend(recorded)
            hub.offer(recorded)
            return result.next_turn

        step, pending = unanswered_calls(context)
        if pending:
            await record(await self._run_tools(context, tasks, step, pending, hooks))
        step = last_step(context)
        while True:
            step += 1
            if step > MAX_STEPS:
                return await record(
                    [_notice(f"stopped after {MAX_STEPS} model calls in one turn", turn=True)],
                    finish=True,
                )
            now = context.model_copy(update={"entries": entries, "tasks": list(tasks.values())})
            first, prefetch = (prefetch, None) if step == 1 else (None, prefetch)
            try:
                reply = await self._stream(now, hub, turn, step, first)
            except openai.OpenAIError as exc:
                log.warning("%s turn %d: model call failed: %s", session_id, turn, exc)
                return await record([_model_failed(exc)], finish=True)
            calls = _tool_calls(reply, turn, step)
            message = NewEntry(
                role="assistant", content="".join(reply.content), tool_calls=calls, step=step
            )
            if not calls:
                return await record([message.model_copy(update={"ends_turn": True})], finish=True)
            await record([message])
            await record(await self._run_tools(now, tasks, step, calls, hooks))

    async def _create(
        self, context: TurnContext, call_id: str
    ) -> AsyncIterator[ChatCompletionChunk]:
        stream = await self._llm.chat.completions.create(
            model=context.model or self._model,
            messages=chat_messages(build_messages(context)),
            tools=cast(list[ChatCompletionToolUnionParam], TOOL_SCHEMAS),
            stream=True,
            extra_headers={ROLE_HEADER: CONVERSATION_ROLE, CALL_ID_HEADER: call_id},
        )
        async for chunk in stream:
            yield chunk

    async def _stream(
        self,
        context: TurnContext,
        hub: SessionHub,
        turn: int,
        step: int,
        prefetch: Prefetch | None = None,
    ) -> _Reply:
        if prefetch is not None:
            chunks = prefetch.chunks()
        else:
            chunks = self._create(context, f"{context.session_id}/{turn}/{step}")
        reply = _Reply()
        seq = 0
        async for chunk in chunks:
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            if delta.content:
                reply.content.append(delta.content)
                hub.token(TokenDelta(turn=turn, step=step, seq=seq, text=delta.content))
                seq += 1
            for call in delta.tool_calls or []:
                slot = reply.calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                if call.id:
                    slot["id"] = call.id
                if call.function is not None:
                    slot["name"] += call.function.name or ""
                    slot["arguments"] += call.function.arguments or ""
        return reply

    async def _run_tools(
        self,
        context: TurnContext,
        tasks: dict[str, SessionTask],
        step: int,
        calls: list[ChatToolCall],
        hooks: TurnHooks,
    ) -> list[NewEntry]:
        status, started = hooks.status, hooks.started
        fresh = hooks.live()
        scope = ToolScope(
            session_id=context.session_id,
            owner=context.owner,
            caller=hooks.caller,
            repo=context.repo,
            turn=context.turn,
            step=step,
            tasks=[
                t.model_copy(update={"phase": fresh[t.task_id].phase}) if t.task_id in fresh else t
                for t in tasks.values()
            ],
        )
        outcomes: list[ToolOutcome] = await asyncio.gather(
            *(run_tool(call, i, scope, self._service, status) for i, call in enumerate(calls))
        )
        new: list[NewEntry] = []
        for outcome in outcomes:
            if outcome.started is not None:
                started(outcome.started)
            new.append(
                NewEntry(
                    role="tool",
                    content=outcome.content,
                    step=step,
                    tool_call_id=outcome.call_id,
                    tool_name=outcome.name,
                    is_error=outcome.is_error,
                    task_id=outcome.started.task_id if outcome.started else None,
                    data=_task_data(outcome.started),
                )
            )
        return new


def _started(new: list[NewEntry], tasks: dict[str, SessionTask]) -> list[SessionTask]:
    """Tasks a tool result says were started, not yet known to the session."""
    out: list[SessionTask] = []
    for entry in new:
        started = entry.data.get("started_task")
        if entry.role == "tool" and isinstance(started, dict) and entry.task_id not in tasks:
            task = SessionTask.model_validate(started)
            tasks[task.task_id] = task
            out.append(task)
    return out


def _task_data(task: SessionTask | None) -> dict[str, Any]:
    return {"started_task": task.model_dump(mode="json")} if task is not None else {}


def _notice(message: str, *, turn: bool = False) -> NewEntry:
    return NewEntry(kind=EntryKind.NOTICE, role="system", content=message, ends_turn=turn)


def _model_failed(exc: openai.OpenAIError) -> NewEntry:
    """The notice that ends a turn whose model call failed (with the OpenAI-style error)."""
    why = (
        f"the model is not answering ({type(exc).__name__}: {str(exc)[:300]}); "
        "your message is kept, send another to try again"
    )
    error = model_error(exc, why)
    return _notice(why, turn=True).model_copy(
        update={"is_error": True, "data": {"error": error.model_dump()}}
    )


def _tool_calls(reply: _Reply, turn: int, step: int) -> list[ChatToolCall]:
    return [
        ChatToolCall(
            id=slot["id"] or f"call_{turn}_{step}_{index}",
            name=slot["name"],
            arguments=slot["arguments"],
        )
        for index, slot in sorted(reply.calls.items())
    ]
