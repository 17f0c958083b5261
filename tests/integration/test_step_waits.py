"""A subagent stuck on a hanging model says so in the task's status, with the time."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import pytest
from rich.console import Console
from temporalio.client import Client

from entrypoints._cli_render import status_view
from switchboard.model_server import ModelServerHandle
from switchboard.models import Role, SubtaskSpec, TaskRequest, TaskResult
from switchboard.service import TaskService
from switchboard.settings import Settings
from switchboard.wire import Workflows

pytestmark = pytest.mark.integration


async def test_status_shows_a_subagent_waiting_on_the_model(
    client: Client, settings: Settings, worker: None, repo: Path, model: ModelServerHandle
) -> None:
    model.add_fault("hang", role="worker")
    service = TaskService(client, settings)
    handle = await client.start_workflow(
        Workflows.TASK,
        TaskRequest(
            goal="Wait on a model",
            repo=str(repo),
            subtasks=[SubtaskSpec(title="Only", role=Role.WORKER)],
            review=False,
        ),
        id=f"task-{uuid.uuid4().hex}",
        task_queue=settings.task_queue,
        result_type=TaskResult,
    )
    seen: list[str] = []
    try:
        for _ in range(150):
            status = await service.status(handle.id)
            seen = [s.waiting for s in status.subagents if s.waiting]
            if seen and int(re.findall(r"\d+", seen[0])[0]) >= 2:
                break
            await asyncio.sleep(0.2)
        assert seen, "no subagent ever said what it waits on"
        assert re.fullmatch(r"waiting on the model for \d+ s", seen[0]), seen
        assert int(re.findall(r"\d+", seen[0])[0]) >= 2  # the time grows while it waits
        console = Console(width=120, record=True)
        console.print(status_view(status))
        assert "#1 waiting on the model for" in console.export_text()
    finally:
        await handle.terminate("test over")
