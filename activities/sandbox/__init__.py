"""Sandboxes for subagent tool calls: Docker containers, or bubblewrap where no daemon runs.

Every tool command of a subagent runs inside one: no network, no capabilities,
non-root, a read-only system, the worktree as the only writable mount (none for
explorers and reviewers), a clean environment, and time and output limits per
command (plus memory/pids/CPU where the backend can enforce them; `describe()`
says which hold). Costs: bubblewrap a few ms per command; Docker one container
start per subagent (0.2-1 s) and then a few ms per command, run by the exec agent
that is the container's PID 1.

There is no unsandboxed fallback: when the chosen backend cannot run,
`select_backend` raises `SandboxUnavailable`.
"""

from __future__ import annotations

from activities.sandbox._base import (
    SANDBOX_ENV,
    WORKSPACE,
    ExecResult,
    Limit,
    Sandbox,
    SandboxUnavailable,
)
from activities.sandbox._bwrap import BwrapSandbox
from activities.sandbox._disk import WorktreeLimits, check_worktree_bounds
from activities.sandbox._owner import forget_hand_over
from switchboard.settings import Settings

__all__ = [
    "SANDBOX_ENV",
    "WORKSPACE",
    "BwrapSandbox",
    "ExecResult",
    "Limit",
    "Sandbox",
    "SandboxUnavailable",
    "WorktreeLimits",
    "check_worktree_bounds",
    "forget_hand_over",
    "seccomp_status",
    "select_backend",
]


def seccomp_status() -> tuple[bool, str]:
    """Whether the seccomp filter can be built here, and what it refuses or why not."""
    from activities.sandbox import _seccomp

    try:
        _seccomp.filter_bpf()
    except _seccomp.SeccompUnavailable as exc:
        return False, str(exc)
    return True, _seccomp.describe()


def select_backend(settings: Settings) -> Sandbox:
    """The sandbox backend `settings.sandbox` asks for, checked to work.

    `docker` needs a daemon that answers and `settings.sandbox_image`; `bwrap`
    needs bubblewrap and user namespaces; `auto` takes Docker when both hold,
    else bubblewrap.

    Raises:
        SandboxUnavailable: the chosen backend cannot run here.
    """
    if settings.sandbox == "docker":
        return _docker_backend(settings)
    if settings.sandbox == "auto":
        try:
            return _docker_backend(settings)
        except SandboxUnavailable:
            pass
    sandbox = BwrapSandbox(settings)
    sandbox.check()
    return sandbox


def _docker_backend(settings: Settings) -> Sandbox:
    from activities.sandbox._docker import DockerSandbox  # the SDK only when asked for

    sandbox = DockerSandbox(settings)
    sandbox.check()
    return sandbox
