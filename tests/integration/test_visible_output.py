"""Control characters a subagent writes are shown, not sent: the CLI, run as a real
process against a real task, never puts an escape sequence or a bidi override on the
terminal, whether they sit in a file's name, its content or the subagent's summary."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from switchboard.model_server import ModelServerHandle, parse_scenario
from switchboard.models import Phase, RejectInput, SubtaskSpec, TaskRequest
from switchboard.settings import Settings
from switchboard.text import visible
from switchboard.wire import Updates, Workflows
from testkit import wait_for_phase

pytestmark = pytest.mark.integration

ESC = "\x1b"
RLO = "\u202e"
# Clears the line, moves up, and prints a harmless-looking replacement; a bidi override.
HOSTILE = (
    "printf 'rm -rf ~\\033[2K\\033[1A\\033]0;title\\007looks fine\\n' > src/notes.txt && "
    "printf 'x\\n' > \"src/evil$(printf '\\033')[31m.txt\" && "
    "printf 'access = \\342\\200\\256 nimda\\n' > \"src/bidi$(printf '\\342\\200\\256')txt.py\""
)


def test_visible_keeps_text_and_shows_controls() -> None:
    assert visible("plain\ttext\nnext line ünïcödé") == "plain\ttext\nnext line ünïcödé"
    assert visible(f"a{ESC}[2Kb\rc\x08d\x9b31m{RLO}e\u2066f\u200bg") == (
        "a␛[2Kb␍c␈d\\x9b31m<U+202E>e<U+2066>f<U+200B>g"
    )


@pytest.fixture
def cli_env(settings: Settings, temporal_env: WorkflowEnvironment) -> dict[str, str]:
    return {
        "SWITCHBOARD_TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "SWITCHBOARD_TASK_QUEUE": settings.task_queue,
        "SWITCHBOARD_USER": "alice",
        "COLUMNS": "200",
    }


async def run_cli(env: dict[str, str], *args: str) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "entrypoints", *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode(errors="replace")
    return out + err


async def test_cli_shows_hostile_names_and_content_visibly(
    client: Client,
    settings: Settings,
    worker: None,
    repo: Path,
    model: ModelServerHandle,
    cli_env: dict[str, str],
) -> None:
    turns = [
        {"tool_calls": [{"name": "run", "arguments": {"command": HOSTILE}}]},
        {"tool_calls": [{"name": "finish", "arguments": {"summary": f"done{ESC}[2J{RLO}!"}}]},
    ]
    model.set_scenario(parse_scenario({"name": "hostile", "roles": {"worker": turns}}))
    request = TaskRequest(
        goal="Take notes", repo=str(repo), subtasks=[SubtaskSpec(title="Notes")], review=False
    )
    handle = await client.start_workflow(
        Workflows.TASK,
        request,
        id=f"task-visible-{settings.host_id}",
        task_queue=settings.task_queue,
    )
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)

    diff = await run_cli(cli_env, "task", "--direct", "diff", handle.id)
    stat = await run_cli(cli_env, "task", "--direct", "diff", handle.id, "--stat")
    status = await run_cli(cli_env, "task", "--direct", "status", handle.id)
    # Read before the reject: a rejected task's repository (and so its diff) is removed.
    raw = await run_cli(cli_env, "task", "--direct", "diff", handle.id, "--json")
    await handle.execute_update(Updates.REJECT, RejectInput(by="alice"))
    watch = await run_cli(cli_env, "task", "--direct", "watch", handle.id)

    for shown in (diff, stat, status, watch):
        assert ESC.encode() not in shown and RLO.encode() not in shown, shown
        text = shown.decode()  # UTF-8 stand-ins contain 0x9b bytes; characters must not
        assert "\x9b" not in text and "\x07" not in text and "\r" not in text
    assert "␛[2K␛[1A␛]0;title␇looks fine".encode() in diff
    assert b"<U+202E> nimda" in diff
    assert "src/evil␛[31m.txt".encode() in stat and b"src/bidi<U+202E>txt.py" in stat
    # The raw bytes stay available to programs.
    assert b"\\u001b[2K" in raw
