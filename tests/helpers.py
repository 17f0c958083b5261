"""Small helpers shared by the integration, e2e and benchmark code."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from temporalio.client import Client, WorkflowHandle

from switchboard.models import Phase, TaskStatus
from switchboard.wire import Queries


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    """A small real repository with one commit on `main`."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "dev@example.com")
    git(path, "config", "user.name", "Dev")
    contents = files or {
        "README.md": "# demo\n\nA tiny package.\n",
        "src/app.py": "def greet(name: str) -> str:\n    return f'hello {name}'\n",
        "shared.txt": "line one\nline two\n",
    }
    for name, text in contents.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


async def status_of(handle: WorkflowHandle[object, object]) -> TaskStatus:
    status: TaskStatus = await handle.query(Queries.STATUS, result_type=TaskStatus)
    return status


async def wait_for(
    handle: WorkflowHandle[object, object],
    predicate: Callable[[TaskStatus], bool],
    *,
    timeout: float = 90.0,
    what: str = "condition",
) -> TaskStatus:
    """Poll the status query until `predicate` holds (no timing assertion: a deadline)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: TaskStatus | None = None
    while loop.time() < deadline:
        try:
            last = await status_of(handle)
        except Exception:  # the first workflow task may not have run yet
            last = None
        if last is not None and predicate(last):
            return last
        if last is not None and last.phase.is_final and not predicate(last):
            raise AssertionError(f"task ended in {last.phase} ({last.error}) before {what}")
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last status: {last}")


async def wait_for_phase(
    handle: WorkflowHandle[object, object], phase: Phase, timeout: float = 90.0
) -> TaskStatus:
    return await wait_for(handle, lambda s: s.phase is phase, timeout=timeout, what=str(phase))


async def history_event_types(client: Client, workflow_id: str) -> list[str]:
    handle = client.get_workflow_handle(workflow_id)
    history = await handle.fetch_history()
    return [e.WhichOneof("attributes") or "" for e in history.events]
