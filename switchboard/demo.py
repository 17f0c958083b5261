"""`make demo` / `switchboard demo`: the whole stack and one delegated task, end to end.

Starts Temporal (embedded), the scripted model (100 ms per call unless set),
a worker and the API; creates a small git repository; delegates a goal; streams
the task's events; approves at the gate (or asks, when interactive); shows the
merged branch; stops everything.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from rich.console import Console
from rich.prompt import Prompt
from rich.table import Table

from switchboard.models import (
    ApproveInput,
    EventKind,
    Phase,
    RejectInput,
    RequestChangesInput,
    TaskEvent,
    TaskRequest,
)
from switchboard.settings import Settings
from switchboard.stack import Stack

DEMO_GOAL = "Add a slugify helper with tests, and tell me how the package is laid out"
DEMO_LATENCY_MS = 100

_STYLE = {
    EventKind.PHASE: "bold cyan",
    EventKind.PLAN: "cyan",
    EventKind.SUBAGENT_STARTED: "blue",
    EventKind.SUBAGENT_STEP: "dim",
    EventKind.SUBAGENT_FINISHED: "blue",
    EventKind.TOOL_DENIED: "yellow",
    EventKind.DIFF_READY: "green",
    EventKind.REVIEW: "magenta",
    EventKind.APPROVAL_NEEDED: "bold yellow",
    EventKind.APPROVED: "bold green",
    EventKind.MERGED: "bold green",
    EventKind.COMPLETED: "bold green",
    EventKind.FAILED: "bold red",
    EventKind.MERGE_CONFLICT: "bold red",
}


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


def _line(event: TaskEvent) -> str:
    style = _STYLE.get(event.kind, "")
    text = (
        f"[{style}]{event.kind.value:<17}[/{style}] {event.message}"
        if style
        else (f"{event.kind.value:<17} {event.message}")
    )
    return f"[dim]{event.offset:>4}[/dim] {text}"


async def _drive(settings: Settings, console: Console, repo: Path, interactive: bool) -> bool:
    from switchboard.service import TaskService
    from switchboard.temporal import connect

    client = await connect(settings)
    service = TaskService(client, settings)
    started = time.monotonic()
    submitted = await service.submit(TaskRequest(goal=DEMO_GOAL, repo=str(repo), owner="demo"))
    task_id = submitted.task_id
    console.print(f"\n[bold]Delegated[/bold] {task_id}: {DEMO_GOAL}")
    if settings.temporal_ui_port:
        console.print(
            f"[dim]Follow it in the Temporal UI: http://127.0.0.1:{settings.temporal_ui_port}"
            f"/namespaces/{settings.temporal_namespace}/workflows/{task_id}[/dim]\n"
        )
    waited_for_approval = 0.0
    async for event in service.watch(task_id):
        console.print(_line(event))
        if event.kind is not EventKind.APPROVAL_NEEDED:
            continue
        waited_for_approval = time.monotonic() - started
        view = await service.diff(task_id)
        console.print(
            f"\n[bold]Combined diff[/bold]: {view.stat.files_changed} files, "
            f"+{view.stat.insertions} -{view.stat.deletions}: {', '.join(view.stat.files)}"
        )
        choice = "a"
        if interactive:
            choice = Prompt.ask(
                "[bold]a[/bold]pprove, request [bold]c[/bold]hanges or [bold]r[/bold]eject?",
                choices=["a", "c", "r"],
                default="a",
            )
        if choice == "a":
            await service.approve(task_id, ApproveInput(by="demo", comment="looks good"))
        elif choice == "c":
            feedback = Prompt.ask("What should change?")
            await service.request_changes(
                task_id, RequestChangesInput(by="demo", feedback=feedback)
            )
        else:
            await service.reject(task_id, RejectInput(by="demo"))
    status = await service.status(task_id)
    elapsed = time.monotonic() - started

    table = Table(title=f"{task_id}: {status.phase.value}")
    for column in ("#", "role", "subtask", "state", "steps", "tokens", "files"):
        table.add_column(column)
    for sub in status.subagents:
        table.add_row(
            str(sub.index),
            sub.role.value,
            sub.title,
            sub.state.value,
            str(sub.steps),
            str(sub.tokens),
            ", ".join(sub.diff_stat.files) if sub.diff_stat else "",
        )
    console.print(table)
    if status.phase is Phase.COMPLETED and status.merge is not None:
        console.print(
            f"[bold green]Merged[/bold green] into branch [bold]{status.merge.branch}[/bold] "
            f"of {repo}:"
        )
        console.print(_git(repo, "log", "--oneline", "--graph", "-8", status.merge.branch))
        console.print(
            f"\nTask took {elapsed:.1f} s ({waited_for_approval:.1f} s until the approval "
            f"gate, model latency {settings.model_server_latency_ms} ms per call)."
        )
        return True
    console.print(f"[bold red]Task ended {status.phase.value}[/bold red]: {status.error or ''}")
    return status.phase is Phase.REJECTED


def run_demo(settings: Settings, interactive: bool = True) -> bool:
    """Run the demo; True when the task ended as intended."""
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
        for label, value in stack.describe():
            console.print(f"  [bold]{label:12}[/bold] {value}")
        return asyncio.run(_drive(settings, console, repo, interactive))
