"""The sandbox interface every backend implements, and what one command returns."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from switchboard.contracts import SandboxInfo, SandboxSpec
from switchboard.models import Role

WORKSPACE = "/workspace"
"""Where the worktree appears inside every sandbox; commands start there."""

SANDBOX_ENV: dict[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "GIT_OPTIONAL_LOCKS": "0",
    "TERM": "dumb",
    # The worktree and mirror may belong to another uid than the command's (Docker
    # runs as the worktree owner, the mirror may be root's): trust them inside.
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "safe.directory",
    "GIT_CONFIG_VALUE_0": "*",
}
"""The whole environment of a sandboxed command: nothing of the host leaks in."""

MAX_OPEN_FILES = 1024


class Limit(StrEnum):
    """Which limit stopped (or cut) a command; reported to the model as-is."""

    TIMEOUT = "timeout"
    OUTPUT = "output"
    MEMORY = "memory"
    PIDS = "pids"


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run at all (missing tool, failed smoke run, lost container).

    Never a reason to run the command without a sandbox: callers fail the activity.
    """


@dataclass(frozen=True, slots=True)
class ExecResult:
    """What one command did inside a sandbox.

    Attributes:
        exit_code: the command's exit status; None when a limit killed it.
        stdout: captured standard output (with stderr when merged), decoded
            leniently and cut at the output limit.
        stderr: captured standard error ("" when merged into stdout).
        truncated: more output was produced than was kept.
        limit: the limit that stopped or cut the command, if any.
        duration: wall-clock seconds.
    """

    exit_code: int | None
    stdout: str
    stderr: str = ""
    truncated: bool = False
    limit: Limit | None = None
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.limit not in (Limit.TIMEOUT, Limit.MEMORY)


def writable(role: Role) -> bool:
    """Only workers get a writable worktree; explorers and reviewers read."""
    return role is Role.WORKER


def task_prefix(task_id: str) -> str:
    """Sandbox ids are `<task_id>-<index>`: every sandbox of a task shares this prefix."""
    return f"{task_id}-"


def resolve_worktree(spec: SandboxSpec) -> Path:
    """The worktree as a real directory; SandboxUnavailable when it is gone."""
    path = Path(os.path.realpath(spec.worktree_path))
    if not path.is_dir():
        raise SandboxUnavailable(f"worktree {spec.worktree_path!r} does not exist")
    return path


def mirror_mounts(spec: SandboxSpec) -> list[str]:
    """Absolute paths mounted read-only: the task's repository and the objects it borrows.

    `spec.mirror_path` is the task's own repository; its `objects/info/alternates`
    names the mirror's `objects/` directory, which is mounted alone (never the
    mirror's refs, nor anything of another task). The worktree's `.git` file names
    the repository by the path git was given, which may differ from its real path
    (symlinks), so both are mounted when they differ.
    """
    if not spec.mirror_path:
        return []
    given = os.path.abspath(spec.mirror_path)
    real = os.path.realpath(spec.mirror_path)
    if not os.path.isdir(real):
        raise SandboxUnavailable(f"mirror {spec.mirror_path!r} does not exist")
    mounts = [given] if given == real else [real, given]
    return mounts + [str(p) for p in _borrowed_objects(Path(real))]


def _borrowed_objects(repo: Path) -> list[Path]:
    alternates = repo / "objects" / "info" / "alternates"
    if not alternates.is_file():
        return []
    found = []
    for line in alternates.read_text(errors="replace").splitlines():
        if line.strip() and not line.startswith("#"):
            target = (repo / "objects" / line.strip()).resolve()
            if not target.is_dir():
                raise SandboxUnavailable(f"{repo} borrows objects from {target}, which is gone")
            found.append(target)
    return found


class Sandbox(ABC):
    """An isolated place to run a subagent's tool commands against its worktree.

    Designed for both kinds of backend: a per-call one (bubblewrap builds the
    sandbox around each command; `start` only checks) and a long-lived one
    (Docker starts one container per subagent in `start` and runs each command in it).
    The worktree is mounted at `WORKSPACE`, writable only for the worker role.
    """

    name: str

    @abstractmethod
    async def start(self, spec: SandboxSpec) -> SandboxInfo:
        """Make the sandbox ready; calling it again for the same id is a no-op."""

    @abstractmethod
    async def exec(
        self,
        spec: SandboxSpec,
        argv: list[str],
        *,
        stdin: bytes | None = None,
        timeout: float,
        output_limit: int,
        merge_stderr: bool = False,
    ) -> ExecResult:
        """Run one command in the sandbox at `WORKSPACE`.

        A failing or limited command is a result, not an exception; only a
        sandbox that cannot run raises `SandboxUnavailable`.
        """

    @abstractmethod
    async def stop(self, sandbox_id: str) -> None:
        """Kill whatever still runs in the sandbox and release it (idempotent)."""

    @abstractmethod
    async def remove_task(self, task_id: str) -> None:
        """Stop every sandbox of a task (ids `<task_id>-<index>`)."""

    async def task_ids(self) -> set[str]:
        """Tasks that still have a sandbox on this host (for reaping orphans at start).

        Per-call backends keep nothing between commands, so they have none.
        """
        return set()

    async def reap_dead_workers(self) -> int:
        """Remove what dead worker processes of this host left running; how many.

        Backends whose sandboxes end with their worker's connection have nothing to do.
        """
        return 0

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Backend name and which isolation guarantees hold on this host."""
