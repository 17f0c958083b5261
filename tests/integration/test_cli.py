"""`switchboard task ...` through the API (under uvicorn, local mode) on the session's
Temporal dev server and the real `DelegatedTaskWorkflow` run by a real worker, and
`--direct` straight to Temporal. Commands run through typer's CliRunner (in a thread,
so the API and the worker keep running on the test's event loop) and, for Ctrl-C, as
a real subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner, Result

from entrypoints.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_UNAVAILABLE, EXIT_USAGE, app
from entrypoints.worker import build_workers, run_workers
from switchboard.model_server import ModelServerHandle
from switchboard.models import Phase, SubagentState, TaskStatus, TaskSubmitted
from switchboard.settings import Settings
from testkit import wait_for, wait_for_phase
from tests.integration.test_conversation_api import ApiServer

pytestmark = pytest.mark.integration


@pytest.fixture
async def api_url(settings: Settings, temporal_env: WorkflowEnvironment) -> AsyncIterator[str]:
    """The API in local mode (no worker of its own: tests start one when they need it)."""
    target = temporal_env.client.service_client.config.target_host
    server = ApiServer(settings.model_copy(update={"temporal_address": target}))
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()


@pytest.fixture
def cli_env(settings: Settings, temporal_env: WorkflowEnvironment, api_url: str) -> dict[str, str]:
    return {
        "SWITCHBOARD_API_URL": api_url,
        "SWITCHBOARD_TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "SWITCHBOARD_TASK_QUEUE": settings.task_queue,
        "SWITCHBOARD_USER": "alice",
        "COLUMNS": "200",
    }


async def cli(env: dict[str, str], *args: str) -> Result:
    runner = CliRunner()
    return await asyncio.to_thread(lambda: runner.invoke(app, list(args), env=env))


async def submit(env: dict[str, str], repo: Path, *extra: str) -> str:
    result = await cli(
        env, "task", "submit", "--repo", str(repo), "--goal", "Add a helper",
        "--subtask", "Helper", "--no-review", *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


async def test_submit_watch_interrupt_status_diff_approve(
    cli_env: dict[str, str], client: Client, worker: None, repo: Path
) -> None:
    task_id = await submit(cli_env, repo, "--request-id", "cli-1")
    assert re.fullmatch(r"task-[0-9A-Z]{26}", task_id)
    again = await cli(
        cli_env, "task", "submit", "--repo", str(repo), "--goal", "same request",
        "--request-id", "cli-1", "--json",
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert TaskSubmitted.model_validate_json(again.stdout) == TaskSubmitted(
        task_id=task_id, created=False
    )

    # Watch as a real process, Ctrl-C once approval is needed: it says where to resume.
    watcher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "entrypoints", "task", "watch", task_id,
        env={**os.environ, **cli_env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert watcher.stdout is not None and watcher.stderr is not None
    seen: list[str] = []
    async with asyncio.timeout(90):
        while not seen or "approval_needed" not in seen[-1]:
            line = (await watcher.stdout.readline()).decode()
            assert line, f"watch ended early: {seen} {(await watcher.stderr.read()).decode()}"
            seen.append(line.rstrip("\n"))
        watcher.send_signal(signal.SIGINT)
        returncode = await watcher.wait()
    stderr = (await watcher.stderr.read()).decode()
    offsets = [int(line.split()[0]) for line in seen]
    assert offsets == list(range(len(offsets)))
    assert returncode == EXIT_INTERRUPTED, stderr
    resume_at = offsets[-1] + 1
    assert f"switchboard task watch {task_id} --from {resume_at}" in stderr

    table = await cli(cli_env, "task", "status", task_id)
    assert table.exit_code == 0, table.output
    for text in (task_id, "awaiting_approval", "Helper", "worker", "done", "next:"):
        assert text in table.stdout, text
    status = TaskStatus.model_validate_json(
        (await cli(cli_env, "task", "status", task_id, "--json")).stdout
    )
    assert status.subagents[0].state is SubagentState.DONE and status.owner == "alice"
    assert status.diff_stat is not None

    listed = await cli(cli_env, "task", "list", "--user", "alice", "--json")
    assert listed.exit_code == 0, listed.output
    assert task_id in [row["task_id"] for row in json.loads(listed.stdout)]
    plain = await cli(cli_env, "task", "list", "--user", "nobody-else")
    assert plain.exit_code == 0 and task_id not in plain.stdout

    patch = await cli(cli_env, "task", "diff", task_id, "--subagent", "1")
    assert patch.exit_code == 0, patch.output
    assert f"+++ b/{status.diff_stat.files[0]}" in patch.stdout
    stat = await cli(cli_env, "task", "diff", task_id, "--stat")
    assert status.diff_stat.files[0] in stat.stdout and "+++" not in stat.stdout

    approved = await cli(cli_env, "task", "approve", task_id, "--comment", "ship it")
    assert approved.exit_code == 0, approved.output
    assert approved.stdout.startswith("approved by alice")

    # Resume from the printed offset: the rest of the events, then exit 0 at the end.
    rest = await cli(cli_env, "task", "watch", task_id, "--from", str(resume_at))
    assert rest.exit_code == 0, rest.output
    lines = rest.stdout.splitlines()
    assert int(lines[0].split()[0]) == resume_at
    assert "approved" in rest.stdout and lines[-1].split()[2] == "completed"

    await client.get_workflow_handle(task_id).result()
    late = await cli(cli_env, "task", "approve", task_id)
    assert late.exit_code == EXIT_FAILED
    assert "already ended (completed)" in late.stderr


async def test_request_changes_then_reject(
    cli_env: dict[str, str], client: Client, worker: None, repo: Path
) -> None:
    task_id = await submit(cli_env, repo)
    handle = client.get_workflow_handle(task_id)
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)

    blank = await cli(cli_env, "task", "request-changes", task_id, "--feedback", "  ")
    assert blank.exit_code == EXIT_FAILED and "feedback must not be blank" in blank.stderr
    missing = await cli(cli_env, "task", "request-changes", task_id)  # only --rebase may omit it
    assert missing.exit_code == EXIT_FAILED and "feedback must not be blank" in missing.stderr
    shown = await cli(cli_env, "task", "status", task_id)
    assert "target: up to date with main" in shown.stdout, shown.stdout
    rebase = await cli(cli_env, "task", "request-changes", task_id, "--rebase")
    assert rebase.exit_code == EXIT_FAILED and "nothing to rebase" in rebase.stderr

    changes = await cli(cli_env, "task", "request-changes", task_id, "--feedback", "add docs")
    assert changes.exit_code == 0, changes.output
    assert changes.stdout.startswith("changes requested by alice") and "add docs" in changes.stdout
    await wait_for(handle, lambda s: s.round == 2 and s.phase is Phase.AWAITING_APPROVAL)

    rejected = await cli(cli_env, "task", "reject", task_id, "--comment", "not now", "--json")
    assert rejected.exit_code == 0, rejected.output
    assert json.loads(rejected.stdout)["decision"] == "rejected"
    await handle.result()
    final = await cli(cli_env, "task", "status", task_id, "--json")
    assert TaskStatus.model_validate_json(final.stdout).phase is Phase.REJECTED


async def test_steer_then_cancel(
    cli_env: dict[str, str], client: Client, worker: None, repo: Path, model: ModelServerHandle
) -> None:
    model.configure(latency_ms=300)  # keep the subagent busy long enough to steer it
    task_id = await submit(cli_env, repo)
    handle = client.get_workflow_handle(task_id)
    await wait_for(handle, lambda s: bool(s.subagents), what="a running subagent")

    early = await cli(cli_env, "task", "approve", task_id)
    assert early.exit_code == EXIT_FAILED and "not awaiting approval" in early.stderr

    steered = await cli(cli_env, "task", "steer", task_id, "--guidance", "keep it small")
    assert steered.exit_code == 0, steered.output
    assert steered.stdout.strip() == f"guidance sent to {task_id}"
    cancelled = await cli(cli_env, "task", "cancel", task_id)
    assert cancelled.exit_code == 0, cancelled.output

    with pytest.raises(WorkflowFailureError):
        await handle.result()
    events = await cli(cli_env, "task", "watch", task_id, "--json")
    kinds = [json.loads(line)["kind"] for line in events.stdout.splitlines()]
    assert "steered" in kinds and kinds[-1] == "cancelled"
    again = await cli(cli_env, "task", "cancel", task_id)
    assert again.exit_code == EXIT_FAILED and "already ended (cancelled)" in again.stderr


async def test_exit_codes(cli_env: dict[str, str], tmp_path: Path, repo: Path) -> None:
    unknown = await cli(cli_env, "task", "status", "task-01J0000000000000000000000")
    assert unknown.exit_code == EXIT_FAILED
    assert unknown.stderr.startswith("error: no task 'task-01J0000000000000000000000'")

    no_repo = await cli(cli_env, "task", "submit", "--repo", str(tmp_path / "x"), "--goal", "g")
    assert no_repo.exit_code == EXIT_FAILED and "does not exist" in no_repo.stderr
    blank_goal = await cli(cli_env, "task", "submit", "--repo", str(repo), "--goal", " ")
    assert blank_goal.exit_code == EXIT_FAILED and "goal must not be blank" in blank_goal.stderr
    # Unreadable, overlong, unknown user's home: one clear message each, never a traceback.
    for hostile in ("/proc/1/root", "/tmp/" + "a" * 256, "~nosuchuser/x", "/etc"):
        refused = await cli(cli_env, "task", "submit", "--repo", hostile, "--goal", "g")
        assert refused.exit_code == EXIT_FAILED, (hostile, refused.output)
        assert "is not a git repository this server may use" in refused.stderr, hostile
        assert refused.exception is None or isinstance(refused.exception, SystemExit), hostile

    for usage in (
        ["task", "status"],
        ["task", "watch", "task-x", "--from", "-1"],
        ["task", "submit", "--repo", str(repo), "--goal", "g", "--role", "explorer"],
        ["task", "submit", "--repo", str(repo), "--goal", "g", "--subtask", "a", "--role", "root"],
    ):
        result = await cli(cli_env, *usage)
        assert result.exit_code == EXIT_USAGE, (usage, result.output)

    no_api = await cli({**cli_env, "SWITCHBOARD_API_URL": "http://127.0.0.1:1"}, "task", "list")
    assert no_api.exit_code == EXIT_UNAVAILABLE
    assert "the Switchboard API is not reachable at http://127.0.0.1:1" in no_api.stderr
    assert "switchboard task --direct" in no_api.stderr
    down = {**cli_env, "SWITCHBOARD_TEMPORAL_ADDRESS": "127.0.0.1:1"}
    unreachable = await cli(down, "task", "--direct", "list")
    assert unreachable.exit_code == EXIT_UNAVAILABLE
    assert "Temporal is not reachable at 127.0.0.1:1" in unreachable.stderr


async def test_watch_goes_on_while_no_worker_answers_and_says_so_on_stderr(
    cli_env: dict[str, str], client: Client, settings: Settings, repo: Path
) -> None:
    task_id = await submit(cli_env, repo)  # no worker yet: nobody answers its queries
    watcher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "entrypoints", "task", "watch", task_id,
        env={**os.environ, **cli_env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert watcher.stdout is not None and watcher.stderr is not None
    stop = asyncio.Event()
    workers: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(60):
            notice = (await watcher.stderr.readline()).decode()
        assert "worker_unavailable" in notice, notice
        assert watcher.returncode is None  # still watching
        workers = asyncio.create_task(run_workers(build_workers(client, settings), stop))
        seen: list[str] = []
        async with asyncio.timeout(90):
            while not seen or "approval_needed" not in seen[-1]:
                line = (await watcher.stdout.readline()).decode()
                assert line, f"watch ended early: {seen} {(await watcher.stderr.read()).decode()}"
                seen.append(line.rstrip("\n"))
            watcher.send_signal(signal.SIGINT)
            returncode = await watcher.wait()
        stderr = (await watcher.stderr.read()).decode()
        # stdout holds the task's events only, every one from 0; the notices went to stderr.
        assert [int(line.split()[0]) for line in seen] == list(range(len(seen)))
        assert returncode == EXIT_INTERRUPTED, stderr
        assert "worker_back" in stderr and stderr.index("worker_back") < stderr.index("resume")
    finally:
        if watcher.returncode is None:
            watcher.kill()
            await watcher.wait()
        stop.set()
        if workers is not None:
            await workers
        await client.get_workflow_handle(task_id).terminate(reason="test over")
