"""Live task progress inside a streaming OpenAI-compatible answer.

A frontend that only speaks request/response hears of a task's progress on the next
answer ("Task updates:"). A streaming answer can do better: when the turn started a
task, the answer stays open after the model's text and carries the task's notable
events (plan, subagents finishing, diff, review, approval needed ...) as they are
recorded, until each task it started reaches its gate or an end, or a time cap
(`Settings.openai_stream_progress_seconds`); then the stream ends as usual. The
events come from the session's own stream (`Gateway.stream`), so they are the same
entries the web page shows; they are not part of the recorded answer, so the next
answer's "Task updates" block lists them again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Final

from chat_gateway import Gateway, StreamItem
from switchboard.errors import ServiceError
from switchboard.identity import Identity
from switchboard.models import EventKind

__all__ = ["STOPS", "Before", "before_answer", "with_progress"]

STOPS: Final = frozenset(
    {
        EventKind.APPROVAL_NEEDED,
        EventKind.MERGE_CONFLICT,
        EventKind.COMPLETED,
        EventKind.FAILED,
        EventKind.CANCELLED,
        EventKind.REJECTED,
    }
)
"""Events after which a task needs the person (or is over): following it ends there."""

Before = tuple[frozenset[str], int]
"""The session's task ids and next offset before the answer."""


async def before_answer(gateway: Gateway, session_id: str, caller: Identity) -> Before:
    """What the session holds before the message is posted (one workflow query)."""
    state = await gateway.state(session_id, caller.owner)
    return frozenset(t.task_id for t in state.tasks), state.next_offset


async def with_progress(
    answer: AsyncIterator[str],
    gateway: Gateway,
    session_id: str,
    caller: Identity,
    *,
    before: Before,
    seconds: float,
) -> AsyncIterator[str]:
    """`answer`, then the live progress of the tasks this answer started (if any)."""
    async for piece in answer:
        yield piece
    if seconds <= 0:
        return
    try:
        async for line in _follow(gateway, session_id, caller, before, seconds):
            yield line
    except ServiceError as exc:
        # The answer is complete; only the following failed. The next answer has it all.
        yield f"- following stopped ({exc}); the next answer opens with what happened\n"


async def _follow(
    gateway: Gateway, session_id: str, caller: Identity, before: Before, seconds: float
) -> AsyncIterator[str]:
    known, offset = before
    state = await gateway.state(session_id, caller.owner)
    following = {t.task_id for t in state.tasks if t.task_id not in known}
    if not following:
        return
    yield f"\n\nProgress (live, for up to {seconds:g} s):\n"
    stream = gateway.stream(session_id, caller, from_offset=offset)
    deadline = time.monotonic() + seconds
    try:
        while following:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                yield "- still under way; the next answer opens with what happens next\n"
                return
            try:
                item = await asyncio.wait_for(anext(stream), remaining)
            except TimeoutError:
                continue
            except StopAsyncIteration:
                return
            line, task_id, stop = _progress_line(item, following)
            if line:
                yield line
            if stop:
                following.discard(task_id)
    finally:
        if isinstance(stream, AsyncGenerator):
            await stream.aclose()


def _progress_line(item: StreamItem, following: set[str]) -> tuple[str, str, bool]:
    """The line a session stream item adds (or ""), its task, and whether it is a stop."""
    data = item.data
    if item.event != "entry" or data.get("kind") != "task_event":
        return "", "", False
    task_id = str(data.get("task_id") or "")
    if task_id not in following:
        return "", "", False
    event = str(data.get("event") or "event")
    line = f"- [{task_id}] {event}: {data.get('content', '')}\n"
    return line, task_id, event in STOPS
