"""Bubblewrap backend: a fresh set of namespaces around every command.

Nothing lives between calls, so `start` only checks that the worktree exists
and the sandbox can run; `exec` builds the sandbox, runs one command in it, and
the kernel tears it down when the command's PID namespace ends. Cost: a few
milliseconds per command (namespace and mount setup), no daemon.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections import defaultdict
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

from activities.sandbox import _seccomp
from activities.sandbox._base import (
    SANDBOX_ENV,
    WORKSPACE,
    ExecResult,
    Limit,
    Sandbox,
    SandboxUnavailable,
    mirror_mounts,
    resolve_worktree,
    task_prefix,
    writable,
)
from activities.sandbox._capture import kill_group, read_status, run_captured
from activities.sandbox._cgroup import Cgroups, CommandCgroup, Counters
from activities.sandbox._launch import Programs, launch
from activities.sandbox._owner import hand_over, sandbox_identity, unprepared
from switchboard.contracts import SandboxInfo, SandboxSpec
from switchboard.recovery import process_alive
from switchboard.settings import Settings

NOBODY = 65534
"""The uid/gid a command has inside; bwrap maps it back to the launcher's own, which
is never root (see `_owner`)."""

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

STOPPED = "[sandbox] the sandbox was stopped while the command started\n"
LAUNCHER_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class BwrapSandbox(Sandbox):
    """Per-call sandboxes with bubblewrap (user, PID, network, IPC, UTS, mount namespaces).

    Args:
        settings: sandbox limits (`sandbox_memory_mb`, `sandbox_pids_limit`, ...).
        bwrap: path of the bwrap binary; found on PATH when omitted.
        use_cgroups: put each command in its own pids/memory/CPU cgroup when this
            process may create cgroups (see `_cgroup`).
    """

    name = "bwrap"

    def __init__(self, settings: Settings, bwrap: str | None = None, *, use_cgroups: bool = True):
        found = bwrap or shutil.which("bwrap")
        if not found:
            raise SandboxUnavailable(
                "bubblewrap is not installed (apt-get install bubblewrap) and no Docker "
                "daemon with the sandbox image answers; refusing to run tools unsandboxed"
            )
        self._bwrap = found
        try:
            _seccomp.filter_bpf()
        except _seccomp.SeccompUnavailable as exc:
            raise SandboxUnavailable(str(exc)) from exc
        self._programs = Programs.find()
        self._settings = settings
        self._cgroups = Cgroups.detect() if use_cgroups else None
        self._running: dict[str, dict[int, CommandCgroup | None]] = defaultdict(dict)

    # ---- lifecycle -------------------------------------------------------------------

    def check(self) -> None:
        """Smoke run: a command in a sandbox around an empty directory must succeed."""
        with tempfile.TemporaryDirectory(prefix="switchboard-smoke-") as empty:
            os.chmod(empty, 0o755)  # readable by the sandbox uid
            identity = self._launch_identity(Path(empty))
            seccomp = _seccomp.filter_fd()
            try:
                argv = self._sandbox_argv(
                    Path(empty), [], ["true"], writable_worktree=False, seccomp_fd=seccomp
                )
                with closing(launch(self._programs, self._settings, None, identity, argv)) as ln:
                    done = subprocess.run(
                        ln.argv,
                        capture_output=True,
                        timeout=30,
                        env={"PATH": LAUNCHER_PATH},
                        pass_fds=(seccomp,),
                    )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise SandboxUnavailable(f"bubblewrap smoke run failed: {exc}") from exc
            finally:
                os.close(seccomp)
        if done.returncode != 0:
            raise SandboxUnavailable(
                "bubblewrap smoke run failed (are user namespaces allowed?): "
                + done.stderr.decode(errors="replace").strip()
            )

    async def start(self, spec: SandboxSpec) -> SandboxInfo:
        worktree = resolve_worktree(spec)
        mirror_mounts(spec)
        if writable(spec.role):  # files host-side git wrote since the last round
            await asyncio.to_thread(hand_over, worktree, self._settings)
        return SandboxInfo(sandbox_id=spec.sandbox_id, backend=self.name)

    async def stop(self, sandbox_id: str) -> None:
        for pid, cgroup in self._running.pop(sandbox_id, {}).items():
            kill_group(pid)
            if cgroup is not None:
                cgroup.kill()

    async def reap_dead_workers(self) -> int:
        """Kill and remove the command cgroups of worker processes that are gone.

        A SIGKILLed worker leaves its in-flight commands' bwrap processes and
        cgroups behind (its own process group dies, theirs does not).
        """
        if self._cgroups is None:
            return 0
        groups = await asyncio.to_thread(self._cgroups.leftovers, process_alive)
        for group in groups:
            await asyncio.to_thread(group.remove)  # kills what is left, then rmdir
        return len(groups)

    async def remove_task(self, task_id: str) -> None:
        for sandbox_id in [s for s in self._running if s.startswith(task_prefix(task_id))]:
            await self.stop(sandbox_id)

    def describe(self) -> dict[str, Any]:
        cg = self._cgroups
        via = f"cgroup v{cg.version} per command" if cg else None
        memory = via or "RLIMIT_AS per process"
        return {
            "backend": self.name,
            "binary": self._bwrap,
            "guarantees": {
                "network": "none: empty network namespace",
                "filesystem": "read-only root: system dirs and an /etc allowlist; the "
                "worktree the only writable mount (read-only for explorer and reviewer); "
                "tmpfs /tmp; the worktree's .git pinned read-only",
                "non_root": f"uid {NOBODY} inside, mapped to the worktree owner or, when root "
                f"owns it, to uid {self._settings.sandbox_uid} (never root); no capabilities; "
                "no user namespaces inside (--disable-userns)",
                "seccomp": _seccomp.describe(),
                "environment": "cleared; " + ", ".join(sorted(SANDBOX_ENV)) + " only",
                "time_limit": "per command; its PID namespace is killed",
                "output_limit": "per command",
                "memory_limit": memory,
                "pids_limit": via
                or "none (no usable cgroup); the PID namespace ends with the command",
                "cpu_limit": via if cg and cg.limits_cpu else "none",
                "file_size_limit": "RLIMIT_FSIZE",
                "disk_limit": "worktree size and file count checked after every tool call "
                "and before the commit",
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
        """Long because: cgroup, status pipe and pid bookkeeping share one try/finally."""
        worktree = resolve_worktree(spec)
        mirrors = mirror_mounts(spec)
        if writable(spec.role) and unprepared(worktree, self._settings):
            await asyncio.to_thread(hand_over, worktree, self._settings)  # exec without start
        owner = self._launch_identity(worktree)
        cgroup = self._new_cgroup(spec.sandbox_id)
        running = self._running[spec.sandbox_id]
        status_read, status_write = os.pipe()
        pid = 0

        def started(new_pid: int) -> None:
            nonlocal pid
            pid = new_pid
            running[new_pid] = cgroup
            if self._running.get(spec.sandbox_id) is not running:  # stopped while spawning
                kill_group(new_pid)
                if cgroup is not None:
                    cgroup.kill()

        try:
            with ExitStack() as passed:  # closed once the command ran, or failed to start
                passed.callback(os.close, status_write)
                passed.callback(os.close, seccomp := _seccomp.filter_fd())
                command = self._sandbox_argv(
                    worktree,
                    mirrors,
                    argv,
                    writable_worktree=writable(spec.role),
                    status_fd=status_write,
                    seccomp_fd=seccomp,
                )
                launcher = launch(self._programs, self._settings, cgroup, owner, command)
                passed.callback(launcher.close)
                captured = await run_captured(
                    launcher.argv,
                    stdin=stdin,
                    timeout=timeout,
                    output_limit=output_limit,
                    merge_stderr=merge_stderr,
                    env={"PATH": LAUNCHER_PATH},
                    pass_fds=(status_write, seccomp),
                    on_start=started,
                )
            status = read_status(status_read)
        finally:
            os.close(status_read)
            running.pop(pid, None)
            counters = cgroup.counters() if cgroup else Counters()
            if cgroup is not None:
                cgroup.kill()
                # rmdir waits for exiting processes; keep that off the event loop.
                await asyncio.shield(asyncio.to_thread(cgroup.remove))
        if "child-pid" not in status and captured.limit is None:
            if self._running.get(spec.sandbox_id) is not running:  # `stop` killed the set-up
                return ExecResult(exit_code=None, stdout="", stderr=STOPPED, duration=0.0)
            raise SandboxUnavailable(
                "bubblewrap could not set up the sandbox: "
                + (captured.stderr or captured.stdout).decode(errors="replace").strip()
            )
        limit, exit_code = captured.limit, captured.exit_code
        if counters.oom_kills:
            limit = Limit.MEMORY
        elif counters.pids_refused and limit is None:
            limit = Limit.PIDS
        return ExecResult(
            exit_code=exit_code,
            stdout=captured.stdout.decode(errors="replace"),
            stderr=captured.stderr.decode(errors="replace"),
            truncated=captured.truncated,
            limit=limit,
            duration=captured.duration,
        )

    def _new_cgroup(self, sandbox_id: str) -> CommandCgroup | None:
        if self._cgroups is None:
            return None
        # The worker's pid in the name lets its successor reap what it leaves behind.
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", sandbox_id)[:80]
        name = f"{safe}-p{os.getpid()}-{uuid.uuid4().hex[:8]}"
        s = self._settings
        try:
            return self._cgroups.create(
                name,
                pids=s.sandbox_pids_limit,
                memory_bytes=s.sandbox_memory_mb * 1024 * 1024,
                cpus=s.sandbox_cpus,
            )
        except OSError as exc:
            raise SandboxUnavailable(f"cannot create the command's cgroup: {exc}") from exc

    def _launch_identity(self, worktree: Path) -> tuple[int, int] | None:
        """Who the launcher drops to when we are root: never root itself.

        bwrap maps the sandbox uid to the launcher's uid, so the launcher drops
        to the worktree's owner, or to the sandbox uid when root owns it.
        """
        if os.geteuid() != 0:
            return None
        return sandbox_identity(worktree, self._settings)

    def _sandbox_argv(
        self,
        worktree: Path,
        mirrors: list[str],
        argv: list[str],
        *,
        writable_worktree: bool,
        seccomp_fd: int,
        status_fd: int | None = None,
    ) -> list[str]:
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
            "--disable-userns",
            "--seccomp",
            str(seccomp_fd),
        ]
        if status_fd is not None:
            bw += ["--json-status-fd", str(status_fd)]
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
        return bw
