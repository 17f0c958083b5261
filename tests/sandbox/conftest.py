"""Real sandboxes around real git worktrees: one bare mirror + worktree per test.

`sandbox` is parametrised over the backends; a backend that cannot run on this
machine is skipped with the reason (never replaced by something unsandboxed).
Whatever a test starts is removed afterwards with `remove_task`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from activities.sandbox import BwrapSandbox, Sandbox, SandboxUnavailable
from switchboard.settings import Settings
from tests.sandbox.helpers import Checkout, make_checkout

BACKENDS = ["bwrap", "docker"]


@pytest.fixture
def checkout(tmp_path: Path) -> Checkout:
    return make_checkout(tmp_path)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        sandbox="bwrap",
        sandbox_command_timeout_seconds=20,
        sandbox_output_limit_bytes=16 * 1024,
        sandbox_memory_mb=512,
        sandbox_pids_limit=64,
        sandbox_file_bytes=2 * 1024 * 1024,
        sandbox_disk_files=500,
    )


def make_backend(name: str, settings: Settings) -> Sandbox:
    """A checked backend, or SandboxUnavailable saying why it cannot run here."""
    if name == "bwrap":
        bwrap = BwrapSandbox(settings)
        bwrap.check()
        return bwrap
    from activities.sandbox._docker import DockerSandbox

    docker = DockerSandbox(settings)
    docker.check()
    return docker


@pytest.fixture(params=BACKENDS)
async def sandbox(
    request: pytest.FixtureRequest, settings: Settings, checkout: Checkout
) -> AsyncIterator[Sandbox]:
    try:
        backend = make_backend(request.param, settings)
    except SandboxUnavailable as exc:
        pytest.skip(f"{request.param} sandbox unavailable here: {exc}")
    yield backend
    await backend.remove_task(checkout.task_id)
