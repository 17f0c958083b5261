"""`switchboard chat`: the conversation in a terminal.

A REPL over the session API: what you type is posted, the answer streams in as
it is written, and your tasks' lives appear as lines while you keep typing.
Slash commands act on tasks directly (/tasks, /status, /diff, /approve,
/changes, /reject, /cancel, /steer); a command without a task id means the
session's newest task. With `-m`, it posts each message, waits for its answer
and exits (for scripts). It talks to the API (`switchboard up` or `api`), so
the same session is open in the web page at the printed URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from switchboard.text import visible

if TYPE_CHECKING:
    from entrypoints.api_client import SessionClient
    from switchboard.conversation import SessionEntry, SessionTask

__all__ = ["chat"]

HELP = """\
/tasks                  your session's tasks
/status [ID]            a task's live status
/diff [ID]              a task's combined diff
/approve [ID] [comment] /reject [ID] [comment]
/changes [ID] FEEDBACK  request changes
/cancel [ID]            stop a task
/steer [ID] GUIDANCE    new guidance for running subagents
/session                the session id and its web page
/quit                   leave (the session and its tasks go on)"""

_TASK_ACTIONS = {
    "/approve": "approve",
    "/reject": "reject",
    "/changes": "request-changes",
    "/cancel": "cancel",
    "/steer": "steer",
}


def chat(
    session: Annotated[
        str | None, typer.Option("--session", help="Resume this session (session-...).")
    ] = None,
    repo: Annotated[
        Path | None, typer.Option("--repo", help="Default repository of a new session.")
    ] = None,
    message: Annotated[
        list[str] | None,
        typer.Option("--message", "-m", help="Post this, wait for the answer, exit (repeatable)."),
    ] = None,
    api: Annotated[
        str | None, typer.Option("--api", help="The API URL (default: SWITCHBOARD_API_URL).")
    ] = None,
    user: Annotated[
        str, typer.Option("--user", envvar="SWITCHBOARD_USER", help="Who you are.")
    ] = "local",
) -> None:
    """Talk to Switchboard: delegate, watch, steer and approve without leaving the chat."""
    from entrypoints.api_client import ApiError
    from switchboard.settings import Settings

    console = Console(soft_wrap=True, highlight=False)
    url = api or Settings().api_base_url
    default_repo = str(repo.resolve()) if repo else _git_root(Path.cwd())
    try:
        asyncio.run(_chat(console, url, user, session, default_repo, message or []))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except ApiError as exc:
        console.print(f"error: {escape(str(exc))}", style="red")
        raise typer.Exit(1) from None
    except OSError as exc:
        console.print(f"error: cannot reach the API at {url} ({exc}); is it running?", style="red")
        raise typer.Exit(3) from None


async def _chat(
    console: Console,
    url: str,
    user: str,
    session_id: str | None,
    repo: str | None,
    messages: list[str],
) -> None:
    import httpx

    from entrypoints.api_client import SessionClient

    async with SessionClient(url, user) as client:
        try:
            if session_id is None:
                session_id = (await client.create_session(repo=repo, title="terminal")).session_id
            await client.state(session_id)
        except httpx.TransportError as exc:
            raise OSError(str(exc)) from exc
        console.print(f"session {session_id} · web: {url}/#{session_id}", style="dim")
        view = _View(console, interactive=not messages)
        follower = asyncio.create_task(view.follow(client, session_id))
        try:
            if messages:
                for text in messages:
                    accepted = await client.post(session_id, text)
                    console.print(f"{user}> {escape(visible(text))}")
                    await view.turn_ended(accepted["turn"])
            else:
                console.print("type a message, or /help", style="dim")
                await _repl(console, client, session_id, view)
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower


async def _repl(console: Console, client: SessionClient, session_id: str, view: _View) -> None:
    from entrypoints.api_client import ApiError

    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return  # end of input
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return
        try:
            if text.startswith("/"):
                await _command(console, client, session_id, text)
            else:
                await client.post(session_id, text)
        except ApiError as exc:
            console.print(f"! {escape(str(exc))}", style="red")


async def _command(console: Console, client: SessionClient, session_id: str, text: str) -> None:
    from entrypoints import _cli_render as render

    name, _, rest = text.partition(" ")
    words = rest.split(maxsplit=1)
    state = await client.state(session_id)
    known = [t.task_id for t in state.tasks]
    task_id, rest = _target(words, known, rest)
    if name == "/help":
        console.print(HELP, markup=False)
    elif name == "/session":
        console.print(f"{session_id} ({len(known)} tasks)")
    elif name == "/tasks":
        await _print_tasks(console, client, state.tasks)
    elif task_id is None:
        console.print("no task yet: say “delegate: …”", style="dim")
    elif name == "/status":
        console.print(render.status_view(await client.task(task_id)))
    elif name == "/diff":
        render.render_diff(console, await client.diff(task_id), stat_only=False)
    elif name in _TASK_ACTIONS:
        result = await client.decide(task_id, _TASK_ACTIONS[name], rest.strip())
        console.print(f"{task_id}: {escape(str(result))}", style="dim")
    else:
        console.print(f"unknown command {escape(name)}; /help lists them")


def _target(words: list[str], known: list[str], rest: str) -> tuple[str | None, str]:
    """The task a command is about (named first, else the latest) and the rest of it."""
    if words and words[0].startswith("task-"):
        return words[0], (words[1] if len(words) > 1 else "")
    return (known[-1] if known else None), rest


async def _print_tasks(console: Console, client: SessionClient, tasks: list[SessionTask]) -> None:
    for task in tasks:
        status = await client.task(task.task_id)
        console.print(_task_line(status), markup=False)
    if not tasks:
        console.print("no tasks yet: say “delegate: …”", style="dim")


class _View:
    """Prints the stream: answers as they are written, task lines as tasks move."""

    def __init__(self, console: Console, *, interactive: bool) -> None:
        self._console = console
        self._interactive = interactive
        self._streaming: tuple[int, int] | None = None
        self._streamed: set[tuple[int, int]] = set()
        self._printed: dict[tuple[int, int], int] = {}
        self._ended: set[int] = set()
        self._changed = asyncio.Event()
        self._phases: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._live = False

    async def turn_ended(self, turn: int) -> None:
        while turn not in self._ended:
            self._changed.clear()
            await self._changed.wait()

    async def follow(self, client: SessionClient, session_id: str) -> None:
        from switchboard.conversation import SessionEntry
        from switchboard.models import TaskStatus

        async for item in client.events(session_id):
            if item.event == "ready":
                self._live = True
            elif item.event == "token":
                self._token(item.data["turn"], item.data["step"], str(item.data["text"]))
            elif item.event == "draft":  # the whole text so far, after a reconnect
                key = (item.data["turn"], item.data["step"])
                text = str(item.data["text"])[self._printed.get(key, 0) :]
                self._token(key[0], key[1], text)
            elif item.event == "entry":
                self._entry(SessionEntry.model_validate(item.data))
            elif item.event == "task" and item.data.get("status"):
                self._task(TaskStatus.model_validate(item.data["status"]))
            elif item.event == "error":
                self._line(f"! {item.data.get('detail')}", "red")
            self._changed.set()

    def _token(self, turn: int, step: int, text: str) -> None:
        if (turn, step) in self._streamed and self._streaming != (turn, step):
            return
        if self._streaming != (turn, step):
            self._end_stream()
            self._console.print("switchboard> ", end="", style="bold")
            self._streaming = (turn, step)
            self._streamed.add((turn, step))
        self._console.print(escape(visible(text)), end="")
        self._printed[(turn, step)] = self._printed.get((turn, step), 0) + len(text)

    def _end_stream(self) -> None:
        if self._streaming is not None:
            self._console.print()
            self._streaming = None

    def _entry(self, entry: SessionEntry) -> None:
        from entrypoints.api_client import render_entry

        if entry.ends_turn and entry.turn is not None:
            self._ended.add(entry.turn)
        key = (entry.turn or 0, entry.step or 0)
        if entry.role == "assistant" and key in self._streamed:
            self._end_stream()
            return
        if entry.role == "user" and (self._live or not self._interactive):
            return  # what you typed is on the screen already
        line = render_entry(entry)
        if line is None:
            return
        self._end_stream()
        style = {"tool": "dim", "system": "cyan", "user": "bold"}.get(entry.role or "", "")
        if entry.is_error:
            style = "red"
        self._line(line, style)

    def _task(self, status: object) -> None:
        from switchboard.models import TaskStatus

        assert isinstance(status, TaskStatus)
        shape = (status.phase.value, tuple(s.state.value for s in status.subagents))
        if self._phases.get(status.task_id) == shape:
            return  # steps and tokens only: not worth a line in a terminal
        self._phases[status.task_id] = shape
        self._end_stream()
        self._line(_task_line(status), "magenta")

    def _line(self, text: str, style: str) -> None:
        self._console.print(escape(visible(text)), style=style or None)


def _task_line(status: object) -> str:
    from switchboard.models import SubagentState, TaskStatus

    assert isinstance(status, TaskStatus)
    done = sum(s.state is SubagentState.DONE for s in status.subagents)
    tokens = sum(s.tokens for s in status.subagents)
    roles = ", ".join(f"{s.role.value} {s.state.value}" for s in status.subagents)
    return (
        f"  ▸ {status.task_id} {status.phase.value} · {done}/{len(status.subagents)} "
        f"subagents done · {tokens} tokens" + (f" · {roles}" if roles else "")
    )


def _git_root(path: Path) -> str | None:
    for candidate in (path, *path.parents):
        if (candidate / ".git").exists():
            return str(candidate)
    return None
