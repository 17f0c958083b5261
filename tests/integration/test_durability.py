"""Durability on real processes: a worker killed mid-task, a dev server restarted
while a task waits for approval. The task carries on as if nothing happened."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from entrypoints.devserver import DevServer
from entrypoints.stack import settings_env
from entrypoints.worker import build_workers, run_workers
from switchboard.model_server import ModelServerHandle
from switchboard.models import (
    ApprovalRecord,
    ApproveInput,
    Phase,
    Role,
    SubtaskSpec,
    TaskRequest,
    TaskResult,
)
from switchboard.settings import Settings
from switchboard.wire import Updates, Workflows
from testkit import free_port, git, wait_for, wait_for_phase

pytestmark = pytest.mark.integration


def _spawn_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "entrypoints", "worker"],
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()


@pytest.fixture
def process_settings(settings: Settings, temporal_env: WorkflowEnvironment) -> Iterator[Settings]:
    address = temporal_env.client.service_client.config.target_host
    yield settings.model_copy(update={"temporal_address": address})


async def test_worker_killed_mid_task_resumes_without_paying_twice(
    client: Client,
    process_settings: Settings,
    repo: Path,
    model: ModelServerHandle,
    tmp_path: Path,
) -> None:
    settings = process_settings
    model.configure(latency_ms=250)
    log = tmp_path / "worker.log"
    worker = _spawn_worker(settings, log)
    subtasks = [SubtaskSpec(title=f"Part {i}", role=Role.WORKER) for i in range(1, 4)]
    handle = await client.start_workflow(
        Workflows.TASK,
        TaskRequest(goal="Survive a crash", repo=str(repo), subtasks=subtasks, review=False),
        id=f"task-{uuid.uuid4().hex}",
        task_queue=settings.task_queue,
        result_type=TaskResult,
    )
    try:
        await wait_for(
            handle,
            lambda s: sum(x.steps for x in s.subagents) >= 4,
            what="a few subagent steps",
            timeout=120,
        )
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        before = model.stats()["total"]
        await asyncio.sleep(0.5)
        worker = _spawn_worker(settings, log)
        status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL, timeout=180)
        assert before > 0
        assert status.diff_stat is not None
        assert sorted(status.diff_stat.files) == [f"src/feature_{i}.py" for i in (1, 2, 3)]
        await handle.execute_update(
            Updates.APPROVE, ApproveInput(by="ops"), result_type=ApprovalRecord
        )
        result = await handle.result()
        assert result.phase is Phase.COMPLETED
        content = git(repo, "show", f"switchboard/{handle.id}:src/feature_2.py")
        assert "scripted subagent 2" in content
        stats = model.stats()
        # Only calls in flight at the kill may be repeated: at most one per subagent.
        assert len(stats["answered_duplicates"]) <= len(subtasks), stats["answered_duplicates"]
    finally:
        _stop_worker(worker)


async def test_dev_server_restart_while_waiting_for_approval(
    settings: Settings, repo: Path, tmp_path: Path
) -> None:
    db = tmp_path / "temporal.db"
    address = f"127.0.0.1:{free_port()}"

    async def connect() -> Client:
        return await Client.connect(address, data_converter=pydantic_data_converter)

    server = DevServer(db, address=address, ui_port=None, log_file=tmp_path / "temporal.log")
    server.start()
    try:
        client = await connect()
        stop = asyncio.Event()
        running = asyncio.create_task(run_workers(build_workers(client, settings), stop))
        handle = await client.start_workflow(
            Workflows.TASK,
            TaskRequest(
                goal="Wait through a restart",
                repo=str(repo),
                subtasks=[SubtaskSpec(title="Only")],
                review=False,
            ),
            id=f"task-{uuid.uuid4().hex}",
            task_queue=settings.task_queue,
            result_type=TaskResult,
        )
        await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
        stop.set()
        await running
        server.stop()

        server.start()
        client = await connect()
        stop = asyncio.Event()
        running = asyncio.create_task(run_workers(build_workers(client, settings), stop))
        try:
            handle = client.get_workflow_handle(handle.id, result_type=TaskResult)
            status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
            assert status.subagents[0].steps > 0
            await handle.execute_update(
                Updates.APPROVE, ApproveInput(by="ops"), result_type=ApprovalRecord
            )
            result = await handle.result()
            assert result.phase is Phase.COMPLETED
            assert result.merge is not None and result.merge.merged
            assert "src/feature_1.py" in git(
                repo, "ls-tree", "-r", "--name-only", f"switchboard/{handle.id}"
            )
        finally:
            stop.set()
            await running
    finally:
        server.stop()


def test_dead_local_worker_only_names_gone_processes_of_this_host() -> None:
    import socket

    from switchboard.recovery import dead_local_worker

    host = socket.gethostname()
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert dead_local_worker(f"{gone.pid}@{host}")
    assert not dead_local_worker(f"{os.getpid()}@{host}")  # this process
    assert not dead_local_worker(f"{os.getppid()}@{host}")  # alive
    assert not dead_local_worker(f"{gone.pid}@another-host")  # not ours to judge
    assert not dead_local_worker("worker-7")  # not pid@host


async def test_a_restarted_worker_takes_back_its_dead_predecessors_attempts(
    client: Client,
    process_settings: Settings,
    repo: Path,
    model: ModelServerHandle,
    tmp_path: Path,
) -> None:
    """A step in flight on a SIGKILLed worker is retried at once, not at its timeout."""
    from temporalio.api.enums.v1 import PendingActivityState

    from switchboard.recovery import reclaim_host
    from switchboard.wire import Errors

    settings = process_settings
    model.configure(latency_ms=60_000)  # the first model call outlives the worker
    log = tmp_path / "worker.log"
    worker = _spawn_worker(settings, log)
    handle = await client.start_workflow(
        Workflows.TASK,
        TaskRequest(
            goal="Survive a crash",
            repo=str(repo),
            subtasks=[SubtaskSpec(title="Part 1", role=Role.WORKER)],
            review=False,
        ),
        id=f"task-{uuid.uuid4().hex}",
        task_queue=settings.task_queue,
        result_type=TaskResult,
    )
    child = client.get_workflow_handle(f"{handle.id}-sub1-r1")

    async def step_started() -> bool:
        try:
            pending = (await child.describe()).raw_description.pending_activities
        except Exception:
            return False
        return any(
            p.activity_type.name == "subagent_step"
            and p.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            for p in pending
        )

    try:
        for _ in range(600):
            if await step_started():
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the first step never started")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

        taken = await reclaim_host(client, settings)

        assert len(taken.attempts) == 1 and taken.attempts[0].startswith(child.id)
        pending = (await child.describe()).raw_description.pending_activities
        step = next(p for p in pending if p.activity_type.name == "subagent_step")
        assert step.last_failure.application_failure_info.type == Errors.WORKER_LOST
        assert step.state != PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        # Taken once: the retry waits for a worker, and a second pass finds nothing.
        assert (await reclaim_host(client, settings)).attempts == []

        model.configure(latency_ms=0)
        worker = _spawn_worker(settings, log)
        status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL, timeout=120)
        assert status.subagents[0].state.value == "done"
    finally:
        model.configure(latency_ms=0)
        _stop_worker(worker)


async def test_a_command_interrupted_by_a_worker_kill_does_not_run_twice(
    client: Client,
    process_settings: Settings,
    repo: Path,
    model: ModelServerHandle,
    tmp_path: Path,
) -> None:
    """SIGKILL during `echo once >> notes/append.txt && sleep 4`: the retried step rolls
    the call back and does not run it again; the model, told so, appends the line if
    it is missing. The merged file holds it once."""
    from switchboard.model_server import Scenario

    settings = process_settings
    run = {"name": "run", "arguments": {"command": ""}}
    commands = [
        "mkdir -p notes && echo once >> notes/append.txt && sleep 4",
        "mkdir -p notes && (grep -qx once notes/append.txt || echo once >> notes/append.txt)",
    ]
    turns = [{"tool_calls": [{**run, "arguments": {"command": c}}]} for c in commands]
    model.set_scenario(Scenario.model_validate({"roles": {"worker": turns}}))
    log = tmp_path / "worker.log"
    worker = _spawn_worker(settings, log)
    handle = await client.start_workflow(
        Workflows.TASK,
        TaskRequest(
            goal="Append once",
            repo=str(repo),
            subtasks=[SubtaskSpec(title="Append", role=Role.WORKER)],
            review=False,
        ),
        id=f"task-{uuid.uuid4().hex}",
        task_queue=settings.task_queue,
        result_type=TaskResult,
    )
    try:
        worktrees = settings.worktrees_dir / handle.id
        for _ in range(1200):  # the line is written; the command now sleeps
            if list(worktrees.glob("*/notes/append.txt")):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the command never ran")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        worker = _spawn_worker(settings, log)

        await wait_for_phase(handle, Phase.AWAITING_APPROVAL, timeout=120)
        await handle.execute_update(
            Updates.APPROVE, ApproveInput(by="ops"), result_type=ApprovalRecord
        )
        assert (await handle.result()).phase is Phase.COMPLETED
        merged = git(repo, "show", f"switchboard/{handle.id}:notes/append.txt")
        assert merged.splitlines() == ["once"]
        # The kill landed mid-command: the retried step reported the call interrupted.
        history = await client.get_workflow_handle(f"{handle.id}-sub1-r1").fetch_history()
        results = b"".join(
            payload.data
            for event in history.events
            if event.HasField("activity_task_completed_event_attributes")
            for payload in event.activity_task_completed_event_attributes.result.payloads
        )
        assert b"interrupted: the worker running this call crashed" in results
        assert model.stats()["by_role"].get("worker") == 3  # no model turn paid twice
    finally:
        _stop_worker(worker)
