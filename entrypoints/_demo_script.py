"""One scripted conversation over the real API, for `make demo` and its tests.

It plays the demo scenario's chat: delegate a task, keep chatting while it runs,
ask how it goes, receive the approval request, approve, see the merge. Every
line goes to `say` as it happens, so the demo prints a live transcript.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pydantic import Field

from entrypoints.api_client import SessionClient, render_entry
from switchboard.conversation import EntryKind, SessionEntry
from switchboard.models import EventKind, Model

__all__ = ["DemoConversation", "drive_scripted_conversation"]

DEMO_SCRIPT = (
    "delegate: add a slugify helper with tests",
    "While that runs: what makes a good slug?",
    "How is it going?",
)
TURN_TIMEOUT_SECONDS = 60.0
TASK_TIMEOUT_SECONDS = 300.0


class DemoConversation(Model):
    session_id: str
    task_id: str | None = None
    merged: bool = False
    branch: str | None = None
    transcript: list[str] = Field(default_factory=list)


async def drive_scripted_conversation(
    api_url: str,
    repo: str,
    *,
    user: str = "demo",
    say: Callable[[str], None] | None = None,
) -> DemoConversation:
    """Drive one conversation against a running API (scripted model: demo scenario).

    Args:
        api_url: The API, e.g. `Settings().api_base_url`.
        repo: The repository the task works on (a local path).
        user: Who talks.
        say: Receives each transcript line as it happens (e.g. `console.print`).

    Returns:
        The session, the task, whether it merged and the transcript.

    Raises:
        TimeoutError: A turn or the task took far longer than the scripted run needs.
    """
    transcript = _Transcript(say)
    async with SessionClient(api_url, user) as client:
        info = await client.create_session(repo=repo, title="demo")
        result = DemoConversation(session_id=info.session_id)
        follower = asyncio.create_task(transcript.follow(client, info.session_id))
        try:
            for message in DEMO_SCRIPT:
                accepted = await client.post(info.session_id, message)
                await transcript.until(_ends(accepted["turn"]), TURN_TIMEOUT_SECONDS)
                if result.task_id is None:
                    started = transcript.first(lambda e: e.tool_name == "delegate_task")
                    result.task_id = started.task_id if started else None
            await transcript.until(_is(EventKind.APPROVAL_NEEDED), TASK_TIMEOUT_SECONDS)
            accepted = await client.post(info.session_id, "Approve it, it looks good.")
            await transcript.until(_is(EventKind.COMPLETED, EventKind.FAILED), TASK_TIMEOUT_SECONDS)
            merged = transcript.first(lambda e: e.event is EventKind.MERGED)
            result.merged = merged is not None
            if merged is not None:
                result.branch = str(merged.data.get("branch") or "") or None
            await transcript.until(_ends(accepted["turn"]), TURN_TIMEOUT_SECONDS)
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
    result.transcript = transcript.lines
    return result


class _Transcript:
    """The session's entries as they arrive, each rendered line passed to `say`."""

    def __init__(self, say: Callable[[str], None] | None) -> None:
        self.say = say
        self.lines: list[str] = []
        self.entries: list[SessionEntry] = []
        self.changed = asyncio.Event()

    async def follow(self, client: SessionClient, session_id: str) -> None:
        async for item in client.events(session_id):
            if item.event != "entry":
                continue
            entry = SessionEntry.model_validate(item.data)
            self.entries.append(entry)
            line = render_entry(entry)
            if line is not None:
                self.lines.append(line)
                if self.say is not None:
                    self.say(line)
            self.changed.set()

    def first(self, test: Callable[[SessionEntry], bool]) -> SessionEntry | None:
        return next((e for e in self.entries if test(e)), None)

    async def until(self, test: Callable[[SessionEntry], bool], timeout: float) -> SessionEntry:
        async with asyncio.timeout(timeout):
            while True:
                found = self.first(test)
                if found is not None:
                    return found
                self.changed.clear()
                await self.changed.wait()


def _is(*kinds: EventKind) -> Callable[[SessionEntry], bool]:
    return lambda e: e.kind is EntryKind.TASK_EVENT and e.event in kinds


def _ends(turn: int) -> Callable[[SessionEntry], bool]:
    return lambda e: e.turn == turn and e.ends_turn
