"""Shared by the sandbox tests: a bare mirror with one worktree, as the repo activities make."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from switchboard.contracts import SandboxSpec
from switchboard.models import Role

ROLE_INDEX = {Role.WORKER: 0, Role.EXPLORER: 1, Role.REVIEWER: 2}


def git(cwd: Path | str, *args: str, input_text: str | None = None) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        input=input_text,
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
    task_id: str = field(default_factory=lambda: f"task-{uuid.uuid4().hex[:12]}")

    def spec(self, role: Role) -> SandboxSpec:
        """One sandbox per role and checkout: `<task_id>-<index>`."""
        return SandboxSpec(
            sandbox_id=f"{self.task_id}-{ROLE_INDEX[role]}",
            worktree_path=str(self.worktree),
            role=role,
            mirror_path=str(self.mirror),
        )


def make_checkout(base: Path) -> Checkout:
    source = base / "source"
    (source / "src").mkdir(parents=True)
    (source / "README.md").write_text("# demo\n")
    (source / "src" / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    git(source, "init", "-q", "-b", "main")
    git(source, "add", ".")
    git(source, "commit", "-q", "-m", "initial")
    mirror = base / "mirrors" / "demo.git"
    git(base, "clone", "-q", "--bare", str(source), str(mirror))
    head = git(mirror, "rev-parse", "HEAD")
    worktree = base / "worktrees" / "task-1" / "0"
    git(mirror, "worktree", "add", "-q", "-b", "switchboard/task-1/0", str(worktree), head)
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("host secret\n")
    return Checkout(mirror=mirror, worktree=worktree, base_commit=head, outside=outside)
