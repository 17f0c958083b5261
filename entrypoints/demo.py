"""`make demo` / `switchboard demo`: the whole stack, and a conversation that delegates.

Starts Temporal (embedded), the scripted model (100 ms per call unless set), a
worker and the API with its chat; creates a small git repository; then either
drives one scripted conversation (`--non-interactive`: delegate a task, keep
chatting while it runs, receive the approval request, approve, see the merge)
or hands the terminal to `switchboard chat` while the web chat serves the same
session. Everything stops on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from entrypoints.stack import Stack
from switchboard.settings import Settings

DEMO_LATENCY_MS = 100
HINT = "Say e.g. 'delegate: add a slugify helper with tests', then approve from the chat."


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_demo_repo(path: Path) -> Path:
    """A tiny Python package under git (created once, reused by later demos)."""
    if (path / ".git").exists():
        return path
    (path / "src").mkdir(parents=True, exist_ok=True)
    (path / "README.md").write_text("# textkit\n\nSmall text helpers.\n")
    (path / "src" / "textkit.py").write_text(
        '"""Text helpers."""\n\n\ndef shout(text: str) -> str:\n    return text.upper() + "!"\n'
    )
    _git(path, "init", "-q", "-b", "main")
    _git(path, "add", "-A")
    _git(
        path,
        "-c",
        "user.name=Switchboard Demo",
        "-c",
        "user.email=demo@switchboard.local",
        "commit",
        "-q",
        "-m",
        "textkit: first version",
    )
    return path


async def _scripted(settings: Settings, console: Console, repo: Path) -> bool:
    from entrypoints._demo_script import drive_scripted_conversation

    started = time.monotonic()
    result = await drive_scripted_conversation(
        settings.api_base_url,
        str(repo),
        user="demo",
        say=lambda line: console.print(escape(line), highlight=False),
    )
    elapsed = time.monotonic() - started
    if not result.merged or result.branch is None:
        console.print(f"[bold red]The delegated task did not merge[/bold red] ({result.task_id})")
        return False
    console.print(
        f"\n[bold green]Merged[/bold green] {result.task_id} into branch "
        f"[bold]{result.branch}[/bold] of {repo}:"
    )
    console.print(_git(repo, "log", "--oneline", "--graph", "-8", result.branch))
    console.print(
        f"\nConversation and task took {elapsed:.1f} s "
        f"(model latency {settings.model_server_latency_ms} ms per call)."
    )
    return True


async def _interactive(settings: Settings, console: Console, repo: Path) -> bool:
    from entrypoints._cli_chat import _chat

    with contextlib.suppress(EOFError, KeyboardInterrupt):
        await _chat(console, settings.api_base_url, "demo", None, str(repo), [])
    return True


def run_demo(settings: Settings, interactive: bool = True) -> bool:
    """Run the demo; True when it ended as intended."""
    console = Console()
    if settings.uses_scripted_model and settings.model_server_latency_ms == 0:
        settings = settings.model_copy(update={"model_server_latency_ms": DEMO_LATENCY_MS})
    repo = make_demo_repo((settings.data_dir / "demo-repo").resolve())
    console.print("[bold]Switchboard demo[/bold]: starting the stack…")
    stack = Stack(
        settings,
        console=console,
        model_args=["--latency-ms", str(settings.model_server_latency_ms)],
    )
    with stack:
        console.print(f"  [bold]{'Chat':12}[/bold] {settings.api_base_url}/")
        for label, value in stack.describe():
            console.print(f"  [bold]{label:12}[/bold] {value}")
        console.print(f"  [dim]{HINT}[/dim]\n")
        drive = _interactive if interactive else _scripted
        return asyncio.run(_watched(stack, drive(settings, console, repo)))


async def _watched(stack: Stack, work: Coroutine[Any, Any, bool]) -> bool:
    """`work`, stopped with `StackError` as soon as a component of the stack exits."""
    running = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(stack.watch_children())
    try:
        done, _ = await asyncio.wait({running, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if running in done:
            return running.result()
        return await watcher  # a component exited: raises StackError
    finally:
        for task in (running, watcher):
            task.cancel()
        await asyncio.gather(running, watcher, return_exceptions=True)
