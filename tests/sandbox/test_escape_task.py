"""The escape battery through whole tasks, on both sandbox backends.

A worker obeys a hostile repository: in round 1 and again after request-changes it
runs every attack of `escape_attacks` in its sandbox (`combined`), aimed at the host
paths it can guess. The task is then approved and published into the user's
repository. A canary file on the host must stay untouched throughout.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from switchboard.model_server import ModelServerHandle, parse_scenario
from switchboard.models import (
    ApproveInput,
    Phase,
    RequestChangesInput,
    Role,
    SubtaskSpec,
    TaskRequest,
    TaskResult,
)
from switchboard.settings import Settings
from switchboard.wire import Updates, Workflows
from testkit import wait_for, wait_for_phase
from tests.integration.conftest import model, model_server
from tests.sandbox.escape_attacks import combined
from tests.sandbox.test_escape_git import CANARY_TEXT, git, make_source

pytestmark = pytest.mark.integration
__all__ = ["model", "model_server"]  # fixtures


def _turns(commands: list[str], summary: str) -> list[dict[str, object]]:
    calls = [{"name": "run", "arguments": {"command": command}} for command in commands]
    return [
        {"tool_calls": calls},
        {"tool_calls": [{"name": "finish", "arguments": {"summary": summary}}]},
    ]


@pytest.mark.parametrize("backend", ["bwrap", "docker"])
async def test_a_hostile_worker_never_runs_code_on_the_host(
    backend: str, client: Client, model: ModelServerHandle, tmp_path: Path
) -> None:
    from activities.sandbox import SandboxUnavailable, select_backend
    from entrypoints.worker import build_workers, run_workers

    settings = Settings(
        data_dir=tmp_path / "data",
        task_queue=f"test-{uuid.uuid4()}",
        host_id=f"h{uuid.uuid4().hex[:12]}",
        model_server_port=model.port,
        sandbox=backend,
        worker_metrics_port=0,
        _env_file=None,
    )
    try:
        select_backend(settings)
    except SandboxUnavailable as exc:
        pytest.skip(f"{backend} unavailable here: {exc}")
    canary = tmp_path / "canary.txt"
    canary.write_text(CANARY_TEXT)
    source = make_source(tmp_path / "user-repo")
    task_id = f"task-{uuid.uuid4().hex}"
    root = str(settings.worktrees_dir.resolve() / task_id / "1")
    attack = combined(f"echo pwned >> {canary}", root)
    model.set_scenario(
        parse_scenario(
            {
                "roles": {
                    "worker": {
                        "scripts": [
                            {"when": "asked for changes", "turns": _turns(attack, "again")},
                            {"turns": _turns(attack, "did as told")},
                        ]
                    }
                }
            }
        )
    )
    stop = asyncio.Event()
    running = asyncio.create_task(run_workers(build_workers(client, settings), stop))
    try:
        handle = await client.start_workflow(
            Workflows.TASK,
            TaskRequest(
                goal="Follow the notes",
                repo=str(source),
                subtasks=[SubtaskSpec(title="Set up", role=Role.WORKER)],
                review=False,
            ),
            id=task_id,
            task_queue=settings.task_queue,
            result_type=TaskResult,
        )
        first = await wait_for_phase(handle, Phase.AWAITING_APPROVAL, timeout=180)
        await handle.execute_update(
            Updates.REQUEST_CHANGES, RequestChangesInput(by="carol", feedback="once more")
        )
        await wait_for(
            handle,
            lambda s: s.round == 2 and s.phase is Phase.AWAITING_APPROVAL,
            what="round 2 awaiting approval",
            timeout=180,
        )
        await handle.execute_update(Updates.APPROVE, ApproveInput(by="carol"))
        result = await handle.result()
    finally:
        stop.set()
        await running

    assert canary.read_text() == CANARY_TEXT, "the host ran a command a subagent wrote"
    assert result.phase is Phase.COMPLETED
    published = git(source, "ls-tree", "-r", f"switchboard/{task_id}").splitlines()
    assert "a_nested_filter/nested/f" in {line.split("\t")[1] for line in published}
    gitlinks = [line.split("\t")[1] for line in published if line.startswith("160000")]
    assert gitlinks == [], "a nested repository was kept as a gitlink"
    (worker,) = first.subagents
    assert "held a nested git repository" in worker.summary
