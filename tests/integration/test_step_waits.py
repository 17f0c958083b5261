"""A subagent stuck on a hanging model says so in the task's status, with the time,
and as task events at each doubling of the wait."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from temporalio.client import Client

from entrypoints._cli_render import status_view
from switchboard.model_server import ModelServerHandle
from switchboard.models import EventKind, Role, SubtaskSpec, TaskRequest, TaskResult
from switchboard.service import TaskService
from switchboard.settings import Settings
from switchboard.wire import Workflows

pytestmark = pytest.mark.integration

NOTICE_SECONDS = 1.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings with a short wait notice (30 s by default)."""
    return settings.model_copy(update={"step_wait_notice_seconds": NOTICE_SECONDS})


async def _start_hanging(client: Client, settings: Settings, repo: Path) -> Any:
    return await client.start_workflow(
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


async def test_status_shows_a_subagent_waiting_on_the_model(
    client: Client, settings: Settings, worker: None, repo: Path, model: ModelServerHandle
) -> None:
    model.add_fault("hang", role="worker")
    service = TaskService(client, settings)
    handle = await _start_hanging(client, settings, repo)
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


async def test_a_long_wait_on_the_model_becomes_task_events_at_each_doubling(
    client: Client, settings: Settings, worker: None, repo: Path, model: ModelServerHandle
) -> None:
    model.add_fault("hang", role="worker")
    service = TaskService(client, settings)
    handle = await _start_hanging(client, settings, repo)
    try:
        waits: list[str] = []
        for _ in range(200):
            page = await service.events(handle.id, 0)
            waits = [e.message for e in page.events if e.kind is EventKind.SUBAGENT_WAITING]
            if len(waits) >= 2:
                break
            await asyncio.sleep(0.2)
        assert len(waits) >= 2, waits
        assert all(re.fullmatch(r"#1 waiting on the model for \d+ s", w) for w in waits), waits
        seconds = [int(re.findall(r"\d+", w.split("for")[1])[0]) for w in waits]
        # 1 s, then 2 s, 4 s ...: each notice at about twice the wait of the one before.
        assert seconds[0] >= NOTICE_SECONDS and seconds[1] >= 2 * NOTICE_SECONDS, seconds
    finally:
        await handle.terminate("test over")
