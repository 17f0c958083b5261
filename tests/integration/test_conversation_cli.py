"""`switchboard chat` as a process against the real API: scripted (`-m`) and as a REPL
with slash commands, streamed answers and live task lines."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from entrypoints.api_client import SessionClient
from switchboard.model_server import ModelServerHandle
from switchboard.models import Phase
from tests.integration.test_conversation import chat_model
from tests.integration.test_conversation_api import ApiServer, api

pytestmark = pytest.mark.integration

__all__ = ["api", "chat_model"]  # fixtures shared with the other conversation tests

WAIT = 90.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    return env


async def _chat(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "entrypoints",
        "chat",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=_env(),
    )


async def _read_until(process: asyncio.subprocess.Process, text: str, seen: list[str]) -> None:
    assert process.stdout is not None
    async with asyncio.timeout(WAIT):
        while not any(text in line for line in seen):
            line = await process.stdout.readline()
            if not line:
                raise AssertionError(f"chat exited before {text!r}:\n" + "".join(seen))
            seen.append(line.decode())


async def test_chat_scripted_then_as_a_repl_with_slash_commands(
    api: ApiServer, repo: Path, chat_model: ModelServerHandle
) -> None:
    scripted = await _chat(
        "--api", api.url, "--user", "tom", "--repo", str(repo),
        "-m", "delegate: add a slugify helper", "-m", "what is a slug?",
    )  # fmt: skip
    output, _ = await asyncio.wait_for(scripted.communicate(), WAIT)
    text = output.decode()
    assert scripted.returncode == 0, text
    assert "switchboard> Let me hand this to a team of subagents." in text
    assert "· delegate_task: started task-" in text
    assert "switchboard> Scripted model here. You said: what is a slug?" in text
    session_id = text.split("session ", 1)[1].split()[0]

    async with SessionClient(api.url, "tom") as tom:
        for _ in range(900):
            state = await tom.state(session_id)
            if state.tasks and state.tasks[0].phase is Phase.AWAITING_APPROVAL:
                break
            await asyncio.sleep(0.1)
        task_id = state.tasks[0].task_id

    repl = await _chat("--api", api.url, "--user", "tom", "--session", session_id)
    assert repl.stdin is not None
    seen: list[str] = []
    try:
        await _read_until(repl, "approval needed", seen)  # the history, replayed
        repl.stdin.write(b"/tasks\n")
        await _read_until(repl, f"▸ {task_id} awaiting_approval · 3/3 subagents done", seen)
        repl.stdin.write(b"how is it going?\n")
        await _read_until(repl, "Here is where your tasks stand:", seen)
        repl.stdin.write(b"/diff\n")
        await _read_until(repl, "src/feature_1.py", seen)
        repl.stdin.write(b"/approve ship it\n")
        await _read_until(repl, "merged into switchboard/", seen)
        await _read_until(repl, "completed", seen)
        repl.stdin.write(b"/quit\n")
        await asyncio.wait_for(repl.wait(), WAIT)
        assert repl.returncode == 0
    finally:
        if repl.returncode is None:
            repl.kill()
            await repl.wait()
    async with SessionClient(api.url, "tom") as tom:
        status = await tom.task(task_id)
    assert status.phase is Phase.COMPLETED and status.approvals[-1].by == "tom"
    assert status.approvals[-1].comment == "ship it"
