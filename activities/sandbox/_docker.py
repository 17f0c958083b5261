"""Docker backend: one long-lived container per subagent, one `exec` per command.

`start` creates the container (no network, all capabilities dropped,
no-new-privileges, read-only root, tmpfs /tmp, memory/CPU/pids limits, the
worktree as the only writable mount); `exec` runs each tool command in it as the
worktree owner; `stop` / `remove_task` remove it. The container start (0.3-1 s)
is paid once per subagent, not per tool call. Every Docker SDK call is blocking
and runs in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import struct
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import Mount, Ulimit

from activities.sandbox._base import (
    MAX_FILE_WRITE_BYTES,
    MAX_OPEN_FILES,
    SANDBOX_ENV,
    WORKSPACE,
    ExecResult,
    Limit,
    Sandbox,
    SandboxUnavailable,
    mirror_mounts,
    resolve_worktree,
    writable,
)
from activities.sandbox._capture import DRAIN_FACTOR, MIN_DRAIN_BYTES
from switchboard.contracts import SandboxInfo, SandboxSpec
from switchboard.settings import Settings

LABEL_TASK = "switchboard.task"
LABEL_SANDBOX = "switchboard.sandbox"
LABEL_WORKTREE = "switchboard.worktree"
LABEL_ROLE = "switchboard.role"
KEEPALIVE_UID = 65534
"""The container's main process runs as this uid, never as the worktree owner,
so `kill -1` by the owner (used to stop a command) cannot take the container down."""
TMPFS_SIZE = "512m"
API_TIMEOUT_SECONDS = 30
REAP_GRACE_SECONDS = 5.0
AFTER_COMMAND = (
    "kill -KILL -1 2>/dev/null; "
    "cat /sys/fs/cgroup/memory.events /sys/fs/cgroup/pids.events "
    "/sys/fs/cgroup/memory/memory.oom_control /sys/fs/cgroup/pids/pids.events 2>/dev/null; "
    "true"
)
"""Run after each command: SIGKILL whatever the command left running in the
background (as bwrap's PID namespace ending would), then read the container's
OOM-kill and refused-fork counts (cgroup v2 and v1 locations)."""


@dataclass
class _Stream:
    """One exec's output as it is read: kept bytes, seen bytes, overflow."""

    keep: int
    ceiling: int
    merge: bool
    out: bytearray
    err: bytearray
    seen: int = 0
    kept: int = 0
    overflowed: bool = False


class DockerSandbox(Sandbox):
    """One container per subagent from `settings.sandbox_image`.

    Args:
        settings: image and limits.
        client: a Docker client; one from the environment when omitted.
    """

    name = "docker"

    def __init__(self, settings: Settings, client: docker.DockerClient | None = None) -> None:
        self._settings = settings
        try:
            self._client = client or docker.from_env(timeout=API_TIMEOUT_SECONDS)
        except DockerException as exc:
            raise SandboxUnavailable(f"no Docker daemon answers: {exc}") from exc
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._baseline: dict[str, tuple[int, int]] = {}

    def check(self) -> None:
        """The daemon answers and the sandbox image exists (blocking)."""
        try:
            self._client.ping()
            self._client.images.get(self._settings.sandbox_image)
        except ImageNotFound as exc:
            raise SandboxUnavailable(
                f"the sandbox image {self._settings.sandbox_image} is missing; build it with "
                "infra/sandbox/build-image.sh (offline) or infra/sandbox/Dockerfile"
            ) from exc
        except (DockerException, OSError) as exc:
            raise SandboxUnavailable(f"no Docker daemon answers: {exc}") from exc

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self, spec: SandboxSpec) -> SandboxInfo:
        async with self._locks[spec.sandbox_id]:
            await asyncio.to_thread(self._ensure_container, spec)
            if spec.sandbox_id not in self._baseline:
                counters = await asyncio.to_thread(
                    self._after_command, spec.sandbox_id, _owner(spec)
                )
                if counters is None:  # saturated by an earlier run: start afresh
                    await asyncio.to_thread(self._reset, spec.sandbox_id)
                    await asyncio.to_thread(self._ensure_container, spec)
                self._baseline[spec.sandbox_id] = counters or (0, 0)
        return SandboxInfo(sandbox_id=spec.sandbox_id, backend=self.name)

    async def stop(self, sandbox_id: str) -> None:
        self._baseline.pop(sandbox_id, None)
        await asyncio.to_thread(self._remove, {"label": f"{LABEL_SANDBOX}={sandbox_id}"})

    async def remove_task(self, task_id: str) -> None:
        for key in [k for k in self._baseline if _task_of(k) == task_id]:
            self._baseline.pop(key, None)
        await asyncio.to_thread(self._remove, {"label": f"{LABEL_TASK}={task_id}"})

    async def task_ids(self) -> set[str]:
        def listed() -> set[str]:
            try:
                containers = self._client.containers.list(all=True, filters={"label": LABEL_TASK})
            except DockerException as exc:
                raise SandboxUnavailable(f"Docker failed: {exc}") from exc
            return {c.labels[LABEL_TASK] for c in containers if c.labels.get(LABEL_TASK)}

        return await asyncio.to_thread(listed)

    def describe(self) -> dict[str, Any]:
        s = self._settings
        return {
            "backend": self.name,
            "image": s.sandbox_image,
            "guarantees": {
                "network": "none (network_mode=none)",
                "filesystem": "read-only root; tmpfs /tmp; the worktree the only writable "
                "mount (read-only for explorer and reviewer); mirror and .git read-only",
                "non_root": "runs as the worktree owner's uid:gid, all capabilities "
                "dropped, no-new-privileges (uid 0 without capabilities when root owns "
                "the worktree)",
                "environment": "only " + ", ".join(sorted(SANDBOX_ENV)),
                "time_limit": "per command; every process of the command's uid is killed",
                "output_limit": "per command",
                "memory_limit": f"{s.sandbox_memory_mb} MB per container, no swap",
                "pids_limit": f"{s.sandbox_pids_limit} per container",
                "cpu_limit": f"{s.sandbox_cpus:g} CPUs per container",
                "file_size_limit": "RLIMIT_FSIZE",
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
        await self.start(spec)  # a no-op when running; recreates a lost container
        started = time.monotonic()
        owner = _owner(spec)
        stream = _Stream(
            keep=output_limit,
            ceiling=max(output_limit * DRAIN_FACTOR, MIN_DRAIN_BYTES),
            merge=merge_stderr,
            out=bytearray(),
            err=bytearray(),
        )
        exec_id, sock = await asyncio.to_thread(self._exec_start, spec, argv, owner, stdin)
        raw = _raw_socket(sock)
        overflow = threading.Event()
        reader = asyncio.ensure_future(
            asyncio.to_thread(_read_frames, raw, stdin, stream, overflow)
        )
        watch = asyncio.ensure_future(asyncio.to_thread(overflow.wait, timeout + 1))
        limit: Limit | None = None
        try:
            done, _ = await asyncio.wait(
                {reader, watch}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if reader not in done:
                limit = Limit.OUTPUT if stream.overflowed else Limit.TIMEOUT
                await asyncio.to_thread(self._kill_all, spec.sandbox_id, owner)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(reader), REAP_GRACE_SECONDS)
        finally:
            overflow.set()  # releases the watcher thread
            with contextlib.suppress(OSError):
                raw.close()
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(reader, REAP_GRACE_SECONDS)
        exit_code: int | None = None
        if limit is None:
            exit_code = await asyncio.to_thread(self._exit_code, exec_id)
        # After every command, so a limit is never blamed on a later one.
        hit = await self._limit_hit(spec.sandbox_id, owner)
        if hit is Limit.MEMORY or (hit is not None and limit is None):
            limit = hit
        truncated = stream.seen > stream.kept
        if truncated and limit is None:
            limit = Limit.OUTPUT
        return ExecResult(
            exit_code=exit_code,
            stdout=stream.out.decode(errors="replace"),
            stderr=stream.err.decode(errors="replace"),
            truncated=truncated,
            limit=limit,
            duration=time.monotonic() - started,
        )

    async def _limit_hit(self, sandbox_id: str, owner: tuple[int, int]) -> Limit | None:
        """Which cgroup limit bit since the previous command, if any."""
        before = self._baseline.get(sandbox_id, (0, 0))
        try:
            now = await asyncio.to_thread(self._after_command, sandbox_id, owner)
        except NotFound:
            return None  # removed under the command by stop / remove_task
        if now is None:
            # Nothing can start in the container any more (forks exhausted by what
            # the command left running): kill it whole; the next command recreates it.
            await asyncio.to_thread(self._reset, sandbox_id)
            self._baseline.pop(sandbox_id, None)
            return Limit.PIDS
        self._baseline[sandbox_id] = now
        if now[0] > before[0]:
            return Limit.MEMORY
        if now[1] > before[1]:
            return Limit.PIDS
        return None

    # ---- blocking Docker calls (run in threads) ----------------------------------------

    def _ensure_container(self, spec: SandboxSpec) -> None:
        name = _container_name(spec.sandbox_id)
        worktree = resolve_worktree(spec)
        labels = {
            LABEL_TASK: _task_of(spec.sandbox_id),
            LABEL_SANDBOX: spec.sandbox_id,
            LABEL_WORKTREE: str(worktree),
            LABEL_ROLE: spec.role.value,
        }
        try:
            container = self._client.containers.get(name)
            if container.status == "running" and container.labels == labels:
                return
            # Stopped, or made for another worktree or role under the same id: redo it.
            container.remove(force=True)
        except NotFound:
            pass
        except DockerException as exc:
            raise SandboxUnavailable(f"Docker failed: {exc}") from exc
        uid, _ = _owner(spec)
        keepalive = KEEPALIVE_UID if uid != KEEPALIVE_UID else KEEPALIVE_UID - 1
        mounts = [
            Mount(mirror, mirror, type="bind", read_only=True) for mirror in mirror_mounts(spec)
        ]
        mounts.append(
            Mount(WORKSPACE, str(worktree), type="bind", read_only=not writable(spec.role))
        )
        dot_git = worktree / ".git"
        if dot_git.exists() and not dot_git.is_symlink():
            mounts.append(Mount(f"{WORKSPACE}/.git", str(dot_git), type="bind", read_only=True))
        s = self._settings
        memory = f"{s.sandbox_memory_mb}m"
        try:
            self._client.containers.run(
                s.sandbox_image,
                ["sleep", "infinity"],
                name=name,
                detach=True,
                init=True,
                user=f"{keepalive}:{keepalive}",
                working_dir=WORKSPACE,
                environment=SANDBOX_ENV,
                hostname="sandbox",
                network_mode="none",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                read_only=True,
                tmpfs={"/tmp": f"rw,nosuid,nodev,size={TMPFS_SIZE},mode=1777"},
                mounts=mounts,
                mem_limit=memory,
                memswap_limit=memory,
                nano_cpus=int(s.sandbox_cpus * 1e9),
                pids_limit=s.sandbox_pids_limit,
                ulimits=[
                    Ulimit(name="fsize", soft=MAX_FILE_WRITE_BYTES, hard=MAX_FILE_WRITE_BYTES),
                    Ulimit(name="nofile", soft=MAX_OPEN_FILES, hard=MAX_OPEN_FILES),
                    Ulimit(name="core", soft=0, hard=0),
                ],
                labels=labels,
            )
        except APIError as exc:
            if exc.status_code == 409:  # created meanwhile by a concurrent start
                return
            raise SandboxUnavailable(f"cannot start the sandbox container: {exc}") from exc
        except DockerException as exc:
            raise SandboxUnavailable(f"cannot start the sandbox container: {exc}") from exc

    def _exec_start(
        self, spec: SandboxSpec, argv: list[str], owner: tuple[int, int], stdin: bytes | None
    ) -> tuple[str, Any]:
        api = self._client.api
        try:
            created = api.exec_create(
                _container_name(spec.sandbox_id),
                argv,
                stdin=stdin is not None,
                stdout=True,
                stderr=True,
                user=f"{owner[0]}:{owner[1]}",
                workdir=WORKSPACE,
            )
            exec_id = str(created["Id"])
            return exec_id, api.exec_start(exec_id, socket=True)
        except DockerException as exc:
            raise SandboxUnavailable(f"cannot run in the sandbox container: {exc}") from exc

    def _exit_code(self, exec_id: str) -> int | None:
        for _ in range(50):  # the exit status lands a moment after the stream closes
            try:
                info = self._client.api.exec_inspect(exec_id)
            except DockerException:
                return None  # the container was removed under the command (stop)
            if not info.get("Running"):
                code = info.get("ExitCode")
                return int(code) if code is not None else None
            time.sleep(0.02)
        return None

    def _kill_all(self, sandbox_id: str, owner: tuple[int, int]) -> None:
        """SIGKILL every process of the command's uid in the container (not its init).

        When not even `kill` can start (forks exhausted), the whole container goes.
        """
        try:
            code, _ = self._client.containers.get(_container_name(sandbox_id)).exec_run(
                ["kill", "-KILL", "-1"], user=f"{owner[0]}:{owner[1]}"
            )
        except NotFound:
            return
        except DockerException:
            code = None
        if code not in (0, 1):  # 1: nothing was left to kill
            self._reset(sandbox_id)

    def _reset(self, sandbox_id: str) -> None:
        """Kill the container's init, and with it every process in the container."""
        with contextlib.suppress(DockerException):
            self._client.containers.get(_container_name(sandbox_id)).kill()

    def _after_command(self, sandbox_id: str, owner: tuple[int, int]) -> tuple[int, int] | None:
        """Reap leftover processes, then read the limit counters (OOM kills, refused forks).

        None when the check itself cannot run in the container.

        Raises:
            NotFound: the container is gone.
        """
        container = self._client.containers.get(_container_name(sandbox_id))
        try:
            code, output = container.exec_run(
                ["sh", "-c", AFTER_COMMAND], user=f"{owner[0]}:{owner[1]}"
            )
        except NotFound:
            raise
        except DockerException:
            return None
        if code != 0:
            return None
        text = output.decode(errors="replace") if isinstance(output, bytes) else ""
        oom = re.search(r"^oom_kill (\d+)$", text, re.MULTILINE)
        pids = re.search(r"^max (\d+)$", text, re.MULTILINE)
        return (int(oom.group(1)) if oom else 0, int(pids.group(1)) if pids else 0)

    def _remove(self, filters: dict[str, str]) -> None:
        try:
            containers = self._client.containers.list(all=True, filters=filters)
        except DockerException as exc:
            raise SandboxUnavailable(f"Docker failed: {exc}") from exc
        for container in containers:
            with contextlib.suppress(NotFound):
                container.remove(force=True)


def _owner(spec: SandboxSpec) -> tuple[int, int]:
    info = Path(os.path.realpath(spec.worktree_path)).stat()
    return info.st_uid, info.st_gid


def _task_of(sandbox_id: str) -> str:
    """`<task_id>-<index>` -> `<task_id>`."""
    head, _, tail = sandbox_id.rpartition("-")
    return head if head and tail.isdigit() else sandbox_id


def _container_name(sandbox_id: str) -> str:
    return "switchboard-" + re.sub(r"[^A-Za-z0-9_.-]", "_", sandbox_id)


def _raw_socket(sock: Any) -> socket.socket:
    raw = getattr(sock, "_sock", sock)
    if not isinstance(raw, socket.socket):
        raise SandboxUnavailable(f"unexpected Docker exec stream {type(sock).__name__}")
    return raw


def _read_frames(
    raw: socket.socket, stdin: bytes | None, stream: _Stream, overflow: threading.Event
) -> None:
    """Feed stdin, then read Docker's multiplexed frames until the exec ends (blocking)."""
    if stdin is not None:
        feeder = threading.Thread(target=_feed, args=(raw, stdin), daemon=True)
        feeder.start()
    buffer = b""
    while True:
        try:
            chunk = raw.recv(65536)
        except OSError:
            return
        if not chunk:
            return
        buffer += chunk
        while len(buffer) >= 8:
            kind, size = struct.unpack(">BxxxL", buffer[:8])
            if len(buffer) < 8 + size:
                break
            payload, buffer = buffer[8 : 8 + size], buffer[8 + size :]
            stream.seen += len(payload)
            room = stream.keep - stream.kept
            if room > 0:
                target = stream.err if kind == 2 and not stream.merge else stream.out
                target += payload[:room]
                stream.kept += min(room, len(payload))
            if stream.seen > stream.ceiling and not stream.overflowed:
                stream.overflowed = True
                overflow.set()


def _feed(raw: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        raw.sendall(data)
    with contextlib.suppress(OSError):
        raw.shutdown(socket.SHUT_WR)
