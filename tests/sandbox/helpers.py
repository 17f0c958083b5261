"""Shared by the sandbox tests: a bare mirror with one worktree, as the repo activities make."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from switchboard.contracts import SandboxSpec
from switchboard.models import Role


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


@dataclass
class Checkout:
    """A bare mirror and one worktree of it, as the repo activities lay them out."""

    mirror: Path
    worktree: Path
    base_commit: str
    outside: Path
    """A directory next to the worktree that no sandbox may touch."""

    def spec(self, role: Role, sandbox_id: str | None = None) -> SandboxSpec:
        return SandboxSpec(
            sandbox_id=sandbox_id or f"task-{uuid.uuid4().hex[:10]}-0",
            worktree_path=str(self.worktree),
            role=role,
            mirror_path=str(self.mirror),
        )
