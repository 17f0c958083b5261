"""Bubblewrap backend: a fresh set of namespaces around every command.

Nothing lives between calls, so `start` only checks that the worktree exists
and the sandbox can run; `exec` builds the sandbox, runs one command in it, and
the kernel tears it down when the command's PID namespace ends. Cost: a few
milliseconds per command (namespace and mount setup), no daemon.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from activities.sandbox._base import (
    MAX_FILE_WRITE_BYTES,
    MAX_OPEN_FILES,
    SANDBOX_ENV,
    WORKSPACE,
    ExecResult,
    Sandbox,
    SandboxUnavailable,
    mirror_mounts,
    resolve_worktree,
    task_prefix,
    writable,
)
from activities.sandbox._capture import kill_group, run_captured
from switchboard.contracts import SandboxInfo, SandboxSpec
from switchboard.settings import Settings

NOBODY = 65534
"""The uid/gid a command has inside; bwrap maps it back to the launcher's own."""

SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
"""Mounted read-only when they are directories, recreated when they are symlinks."""

ETC_ALLOWED = (
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "group",
    "host.conf",
    "hosts",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "localtime",
    "magic",
    "magic.mime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "profile",
    "protocols",
    "python3",
    "services",
    "shells",
    "ssl",
    "terminfo",
    "timezone",
)
"""/etc entries a tool may need. Not /etc wholesale: the command's uid maps to
the launcher's, so when that is root it could read root-only files such as
/etc/shadow or SSH host keys."""

LAUNCHER_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
STATUS_FD_READ_LIMIT = 64 * 1024


class BwrapSandbox(Sandbox):
    """Per-call sandboxes with bubblewrap (user, PID, network, IPC, UTS, mount namespaces).

    Args:
        settings: sandbox limits (`sandbox_memory_mb`, ...).
        bwrap: path of the bwrap binary; found on PATH when omitted.
    """

    name = "bwrap"

    def __init__(self, settings: Settings, bwrap: str | None = None) -> None:
        found = bwrap or shutil.which("bwrap")
        if not found:
            raise SandboxUnavailable(
                "bubblewrap is not installed (apt-get install bubblewrap) and no Docker "
                "daemon with the sandbox image answers; refusing to run tools unsandboxed"
            )
        self._bwrap = found
        self._prlimit = shutil.which("prlimit")
        self._settings = settings
        self._running: dict[str, set[int]] = defaultdict(set)

    # ---- lifecycle -------------------------------------------------------------------

    def check(self) -> None:
        """Smoke run: a command in a sandbox around an empty directory must succeed."""
        with tempfile.TemporaryDirectory(prefix="switchboard-smoke-") as empty:
            argv = self._command(Path(empty), None, [], ["true"], writable_worktree=False)
            try:
                done = subprocess.run(
                    argv, capture_output=True, timeout=30, env={"PATH": LAUNCHER_PATH}
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise SandboxUnavailable(f"bubblewrap smoke run failed: {exc}") from exc
        if done.returncode != 0:
            raise SandboxUnavailable(
                "bubblewrap smoke run failed (are user namespaces allowed?): "
                + done.stderr.decode(errors="replace").strip()
            )

    async def start(self, spec: SandboxSpec) -> SandboxInfo:
        resolve_worktree(spec)
        mirror_mounts(spec)
        return SandboxInfo(sandbox_id=spec.sandbox_id, backend=self.name)

    async def stop(self, sandbox_id: str) -> None:
        for pid in self._running.pop(sandbox_id, set()):
            kill_group(pid)

    async def remove_task(self, task_id: str) -> None:
        for sandbox_id in [s for s in self._running if s.startswith(task_prefix(task_id))]:
            await self.stop(sandbox_id)

    def describe(self) -> dict[str, Any]:
        limited = self._prlimit is not None
        return {
            "backend": self.name,
            "binary": self._bwrap,
            "guarantees": {
                "network": "none: empty network namespace",
                "filesystem": "system dirs and an /etc allowlist read-only; worktree the "
                "only writable mount (read-only for explorer and reviewer); tmpfs /tmp",
                "non_root": f"uid {NOBODY} inside, no capabilities",
                "environment": "cleared; " + ", ".join(sorted(SANDBOX_ENV)) + " only",
                "time_limit": "per command; the PID namespace is killed",
                "output_limit": "per command",
                "memory_limit": "RLIMIT_AS per process" if limited else "none (no prlimit)",
                "file_size_limit": "RLIMIT_FSIZE" if limited else "none (no prlimit)",
                "pids_limit": "none: the PID namespace ends with the command",
                "cpu_limit": "none",
            },
        }

    # ---- one command -----------------------------------------------------------------

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
        worktree = resolve_worktree(spec)
        command = self._command(
            worktree,
            spec.sandbox_id,
            mirror_mounts(spec),
            argv,
            writable_worktree=writable(spec.role),
            status_fd=True,
        )
        user, group = self._launch_identity(worktree)
        status_read, status_write = os.pipe()
        running = self._running[spec.sandbox_id]
        pid = 0

        def started(new_pid: int) -> None:
            nonlocal pid
            pid = new_pid
            running.add(new_pid)

        try:
            command = [a if a != "{status_fd}" else str(status_write) for a in command]
            try:
                captured = await run_captured(
                    command,
                    stdin=stdin,
                    timeout=timeout,
                    output_limit=output_limit,
                    merge_stderr=merge_stderr,
                    env={"PATH": LAUNCHER_PATH},
                    pass_fds=(status_write,),
                    on_start=started,
                    user=user,
                    group=group,
                )
            finally:
                os.close(status_write)
            status = _read_status(status_read)
        finally:
            os.close(status_read)
            running.discard(pid)
        if "child-pid" not in status and captured.limit is None:
            raise SandboxUnavailable(
                "bubblewrap could not set up the sandbox: "
                + (captured.stderr or captured.stdout).decode(errors="replace").strip()
            )
        return ExecResult(
            exit_code=captured.exit_code,
            stdout=captured.stdout.decode(errors="replace"),
            stderr=captured.stderr.decode(errors="replace"),
            truncated=captured.truncated,
            limit=captured.limit,
            duration=captured.duration,
        )

    def _launch_identity(self, worktree: Path) -> tuple[int | None, int | None]:
        """Launch as the worktree's owner when we are root and it is someone else's.

        bwrap maps the sandbox uid to the launcher's uid, so files the worker
        writes belong to whoever launched it: the worktree owner, not root.
        """
        if os.geteuid() != 0:
            return None, None
        info = worktree.stat()
        if info.st_uid == 0:
            return None, None
        return info.st_uid, info.st_gid

    def _command(
        self,
        worktree: Path,
        sandbox_id: str | None,
        mirrors: list[str],
        argv: list[str],
        *,
        writable_worktree: bool,
        status_fd: bool = False,
    ) -> list[str]:
        limits: list[str] = []
        if self._prlimit:
            memory = self._settings.sandbox_memory_mb * 1024 * 1024
            limits = [
                self._prlimit,
                f"--as={memory}",
                f"--fsize={MAX_FILE_WRITE_BYTES}",
                f"--nofile={MAX_OPEN_FILES}",
                "--core=0",
                "--",
            ]
        bw = [
            self._bwrap,
            "--unshare-all",
            "--unshare-user",
            "--uid",
            str(NOBODY),
            "--gid",
            str(NOBODY),
            "--hostname",
            "sandbox",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--clearenv",
        ]
        if status_fd:
            bw += ["--json-status-fd", "{status_fd}"]
        for key, value in SANDBOX_ENV.items():
            bw += ["--setenv", key, value]
        bw += ["--ro-bind", "/usr", "/usr"]
        for path in SYSTEM_DIRS:
            if os.path.islink(path):
                bw += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                bw += ["--ro-bind", path, path]
        for entry in ETC_ALLOWED:
            bw += ["--ro-bind-try", f"/etc/{entry}", f"/etc/{entry}"]
        bw += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        for mirror in mirrors:
            bw += ["--ro-bind", mirror, mirror]
        bw += ["--bind" if writable_worktree else "--ro-bind", str(worktree), WORKSPACE]
        dot_git = worktree / ".git"
        if writable_worktree and dot_git.exists() and not dot_git.is_symlink():
            # The `.git` file points host-side git at its metadata: a worker that
            # could rewrite it could aim later host git commands at a crafted repo.
            bw += ["--ro-bind", str(dot_git), f"{WORKSPACE}/.git"]
        bw += ["--remount-ro", "/", "--chdir", WORKSPACE, "--", *argv]
        return limits + bw


def _read_status(fd: int) -> dict[str, Any]:
    """Merge bwrap's JSON status lines; the writer end is closed, so this cannot block."""
    os.set_blocking(fd, False)
    data = b""
    with contextlib.suppress(BlockingIOError):
        while len(data) < STATUS_FD_READ_LIMIT and (chunk := os.read(fd, 4096)):
            data += chunk
    merged: dict[str, Any] = {}
    for line in data.decode(errors="replace").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            value = json.loads(line)
            if isinstance(value, dict):
                merged.update(value)
    return merged
