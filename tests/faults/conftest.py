"""Fixtures of the fault suite: the session's dev server and scripted model (the
integration suite's fixtures), settings for worker processes, and the harness."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from switchboard.settings import Settings
from tests.faults.harness import WorkerProcess, dead_worker_cgroups
from tests.integration.conftest import model, model_server, repo, settings

__all__ = ["model", "model_server", "repo", "settings"]


@pytest.fixture
def process_settings(settings: Settings, temporal_env: WorkflowEnvironment) -> Settings:
    """Settings a worker in another process can use: the session's dev server, and a
    10 s model timeout so a hung call is given up in the time of a test."""
    address = temporal_env.client.service_client.config.target_host
    return settings.model_copy(update={"temporal_address": address, "llm_timeout_seconds": 10})


@pytest.fixture
def worker_process(process_settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A worker process, started; stopped at the end, its dead predecessors' cgroups checked."""
    worker = WorkerProcess(process_settings, tmp_path / "worker.log")
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
    killed = worker.pids[:-1]
    assert not dead_worker_cgroups(killed), "a killed worker's command cgroups outlived it"
