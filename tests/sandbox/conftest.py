"""Real sandboxes around real git worktrees: one bare mirror + worktree per test.

`sandbox` is parametrised over the backends; a backend that cannot run on this
machine is skipped with the reason (never replaced by something unsandboxed).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from activities.sandbox import BwrapSandbox, Sandbox, SandboxUnavailable
from switchboard.settings import Settings
from tests.sandbox.helpers import Checkout, git

BACKENDS = ["bwrap"]


@pytest.fixture
def checkout(tmp_path: Path) -> Checkout:
    source = tmp_path / "source"
    (source / "src").mkdir(parents=True)
    (source / "README.md").write_text("# demo\n")
    (source / "src" / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    git(source, "init", "-q", "-b", "main")
    git(source, "add", ".")
    git(source, "commit", "-q", "-m", "initial")
    mirror = tmp_path / "mirrors" / "demo.git"
    git(tmp_path, "clone", "-q", "--bare", str(source), str(mirror))
    base = git(mirror, "rev-parse", "HEAD")
    worktree = tmp_path / "worktrees" / "task-1" / "0"
    git(mirror, "worktree", "add", "-q", "-b", "switchboard/task-1/0", str(worktree), base)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("host secret\n")
    return Checkout(mirror=mirror, worktree=worktree, base_commit=base, outside=outside)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        sandbox="bwrap",
        sandbox_command_timeout_seconds=20,
        sandbox_output_limit_bytes=16 * 1024,
        sandbox_memory_mb=512,
        sandbox_pids_limit=64,
    )


def make_backend(name: str, settings: Settings) -> Sandbox:
    if name == "bwrap":
        backend = BwrapSandbox(settings)
        backend.check()
        return backend
    raise SandboxUnavailable(f"unknown backend {name}")


@pytest.fixture(params=BACKENDS)
def sandbox(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Sandbox]:
    try:
        backend = make_backend(request.param, settings)
    except SandboxUnavailable as exc:
        pytest.skip(f"{request.param} sandbox unavailable here: {exc}")
    yield backend
