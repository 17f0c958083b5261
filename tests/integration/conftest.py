"""Fixtures for tests that run whole tasks: the scripted model server, settings
pointing at it, and a worker (both queues) running in this process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from entrypoints.worker import build_workers, run_workers
from switchboard.model_server import ModelServerHandle, builtin_scenario, running_model_server
from switchboard.settings import Settings
from testkit import make_repo


@pytest.fixture(scope="session")
def model_server() -> Iterator[ModelServerHandle]:
    with running_model_server(builtin_scenario()) as handle:
        yield handle


@pytest.fixture
def model(model_server: ModelServerHandle) -> ModelServerHandle:
    """The session's model server, reset to the demo scenario for this test."""
    model_server.reset()
    model_server.set_scenario(builtin_scenario())
    model_server.configure(latency_ms=0, token_rate=0, role_latency_ms={})
    return model_server


@pytest.fixture
def settings(tmp_path: Path, model: ModelServerHandle) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        task_queue=f"test-{uuid.uuid4()}",
        host_id=f"h{uuid.uuid4().hex[:12]}",
        model_server_port=model.port,
        sandbox="bwrap",
        worker_metrics_port=0,
        _env_file=None,
    )


@pytest.fixture
async def worker(client: Client, settings: Settings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    running = asyncio.create_task(run_workers(build_workers(client, settings), stop))
    await asyncio.sleep(0)
    try:
        yield
    finally:
        stop.set()
        await running


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "user-repo")
