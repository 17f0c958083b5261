"""Docker backend: one long-lived container per subagent, its PID 1 an exec agent.

`start` creates the container (no network, all capabilities dropped,
no-new-privileges, read-only root, tmpfs /tmp, memory/CPU/pids limits, the
worktree as the only writable mount) whose main process is the exec agent
(`_agent.py`, run by the image's python3 as the worktree owner). The agent
connects back to a socket the host listens on (`_agent_link.py`) and runs each
tool command on request: in a new session, with the time limit and output cap,
then SIGKILLs everything else in the container and reports the cgroup's OOM and
refused-fork counters. A command costs 2-3 ms on top of itself, where a
`docker exec` cost ~50 ms through runc plus a second one for the after-command
check. The container start (~0.2 s here) is paid once per subagent; `start` also
waits for the agent's hello (~16 ms of it), so that an image that cannot run the
agent fails the start, not the first tool call. `stop` / `remove_task` remove the
container; a lost agent (killed, OOM-killed, frozen, container removed) is
reported on the command it ran and replaced on the next one. Commands on one
sandbox run one at a time, since each ends by killing all the others. Every
Docker SDK call is blocking and runs in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import Mount, Ulimit

from activities.sandbox import _seccomp
from activities.sandbox._agent_link import (
    AGENT_ARGV,
    RUN_MOUNT,
    SETTLE_SECONDS,
    AgentLink,
    AgentLost,
    listen,
    remove_directory,
)
from activities.sandbox._base import (
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
from activities.sandbox._owner import hand_over, sandbox_identity
from switchboard.contracts import SandboxInfo, SandboxSpec
from switchboard.settings import Settings

log = logging.getLogger(__name__)

LABEL_TASK = "switchboard.task"
LABEL_SANDBOX = "switchboard.sandbox"
LABEL_WORKTREE = "switchboard.worktree"
LABEL_ROLE = "switchboard.role"
LABEL_OWNER = "switchboard.owner"
TMPFS_SIZE = "512m"
API_TIMEOUT_SECONDS = 30
AGENT_START_SECONDS = 20.0
"""How long a new container's agent may take to connect (image on a slow disk)."""
AGENT_POLL_SECONDS = 0.5
"""While waiting for it, how often to check that the container still runs."""
OOM_REPORT_SECONDS = 5
"""How long a container whose agent was lost may take to stop (and report an OOM kill)."""
RUNTIME_DIR = "sandbox-run"
"""Under the data directory: one short-lived directory per container launch."""


class _Stopped(Exception):
    """The sandbox was stopped while this call waited for it."""


@dataclass(eq=False)
class _Agent:
    """One container's exec agent as this process knows it."""

    labels: dict[str, str]
    handshake: asyncio.Future[AgentLink]
    stopped: bool = False

    def link(self) -> AgentLink | None:
        """The link once the handshake succeeded, else None."""
        done = self.handshake.done() and not self.handshake.cancelled()
        return self.handshake.result() if done and not self.handshake.exception() else None

    def usable(self) -> bool:
        if not self.handshake.done():
            return not self.stopped
        link = self.link()
        return link is not None and link.alive

    async def connected(self) -> AgentLink:
        """The link once the agent said hello.

        Raises:
            SandboxUnavailable: the agent did not start.
            _Stopped: `stop` came first.
        """
        await asyncio.wait({self.handshake})
        if self.stopped or self.handshake.cancelled():
            raise _Stopped
        return self.handshake.result()

    def abandon(self) -> None:
        """Hang up (the agent then kills what runs and exits) or stop waiting for it."""
        self.stopped = True
        self.handshake.cancel()
        link = self.link()
        if link is not None:
            link.close()


class DockerSandbox(Sandbox):
    """One container per subagent from `settings.sandbox_image`.

    Args:
        settings: image and limits; the runtime directories go under `data_dir`.
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
        self._agents: dict[str, _Agent] = {}
        self._removals: dict[str, asyncio.Future[None]] = {}
        self._runtime = Path(os.path.abspath(settings.data_dir)) / RUNTIME_DIR
        try:
            self._seccomp = _seccomp.docker_profile()
        except _seccomp.SeccompUnavailable as exc:
            raise SandboxUnavailable(str(exc)) from exc

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
        if writable(spec.role):  # files host-side git wrote since the last round
            await asyncio.to_thread(hand_over, resolve_worktree(spec), self._settings)
        async with self._locks[spec.sandbox_id]:
            agent = await self._agent(spec)
            with contextlib.suppress(_Stopped):
                await agent.connected()
        return SandboxInfo(sandbox_id=spec.sandbox_id, backend=self.name)

    async def stop(self, sandbox_id: str) -> None:
        """Hang up on the agent and kill the container: nothing of it runs afterwards.

        Deleting the container (0.3-1 s of the daemon's time under load) goes on in
        the background, so a subagent's ending does not wait for it; a new start of
        the same sandbox waits for it first. What a worker's exit interrupts,
        `remove_task` (at the task's end) and the reaper at start remove.
        """
        agent = self._agents.pop(sandbox_id, None)
        if agent is not None:
            agent.abandon()
        # SIGKILL to the container's PID 1 ends its PID namespace: nothing of it runs
        # once this returns, whatever state the agent was in.
        await asyncio.to_thread(self._kill_container, sandbox_id)
        removal = asyncio.ensure_future(
            asyncio.to_thread(
                self._remove,
                {"label": f"{LABEL_SANDBOX}={sandbox_id}"},
                lambda s: s == _safe(sandbox_id),
            )
        )
        self._removals[sandbox_id] = removal
        removal.add_done_callback(lambda done: self._removed(sandbox_id, done))

    def _removed(self, sandbox_id: str, done: asyncio.Future[None]) -> None:
        if self._removals.get(sandbox_id) is done:
            del self._removals[sandbox_id]
        if not done.cancelled() and done.exception() is not None:
            log.warning("could not remove the sandbox %s: %s", sandbox_id, done.exception())

    async def _removal_done(self, sandbox_id: str) -> None:
        removal = self._removals.get(sandbox_id)
        if removal is not None:
            with contextlib.suppress(SandboxUnavailable):
                await asyncio.shield(removal)

    async def remove_task(self, task_id: str) -> None:
        for sandbox_id in [s for s in self._removals if _task_of(s) == task_id]:
            await self._removal_done(sandbox_id)
        for sandbox_id in [s for s in self._agents if _task_of(s) == task_id]:
            self._agents.pop(sandbox_id).abandon()
        await asyncio.to_thread(
            self._remove,
            {"label": f"{LABEL_TASK}={task_id}"},
            lambda s: _task_of(s) == _safe(task_id),
        )

    async def task_ids(self) -> set[str]:
        def listed() -> set[str]:
            try:
                containers = self._client.containers.list(
                    all=True, filters={"label": LABEL_TASK}, ignore_removed=True
                )
            except DockerException as exc:
                raise SandboxUnavailable(f"Docker failed: {exc}") from exc
            tasks = {c.labels[LABEL_TASK] for c in containers if c.labels.get(LABEL_TASK)}
            return tasks | {_task_of(s) for s in self._runtime_dirs()}

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
                "non_root": "runs as the worktree owner's uid:gid, or the sandbox uid "
                f"({s.sandbox_uid}) when root owns the worktree; all capabilities dropped, "
                "no-new-privileges; the exec agent is PID 1 and non-dumpable, so commands "
                "can neither signal nor trace it",
                "seccomp": _seccomp.describe() + " (this profile replaces Docker's default)",
                "environment": "only " + ", ".join(sorted(SANDBOX_ENV)),
                "time_limit": "per command; at expiry every other process in the container "
                "is killed (as after every command)",
                "output_limit": "per command",
                "memory_limit": f"{s.sandbox_memory_mb} MB per container, no swap; the OOM "
                "killer takes commands before the exec agent",
                "pids_limit": f"{s.sandbox_pids_limit} per container",
                "cpu_limit": f"{s.sandbox_cpus:g} CPUs per container",
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
        """Run one command through the sandbox's agent (the container is made on demand).

        Long because: every way the agent call ends (answer, no answer in time, agent
        lost, cancelled) is decided under the sandbox's lock, in one place.
        """
        # One command at a time per sandbox: each ends by killing all the others.
        async with self._locks[spec.sandbox_id]:
            agent = await self._agent(spec)  # recreates a lost or stopped container
            try:
                link = await agent.connected()
            except _Stopped:
                return _failed("the sandbox was stopped", None, merge_stderr, time.monotonic())
            started = time.monotonic()
            try:
                reply = await asyncio.wait_for(
                    link.run(
                        argv,
                        stdin,
                        timeout=timeout,
                        keep=output_limit,
                        ceiling=max(output_limit * DRAIN_FACTOR, MIN_DRAIN_BYTES),
                        merge_stderr=merge_stderr,
                    ),
                    timeout + SETTLE_SECONDS,
                )
            except TimeoutError:
                await self._discard(spec.sandbox_id, agent)
                message = "the sandbox did not answer in time; it was reset"
                return _failed(message, Limit.TIMEOUT, merge_stderr, started)
            except AgentLost:
                if agent.stopped:
                    message = "the sandbox was stopped while the command ran"
                    return _failed(message, None, merge_stderr, started)
                oom = await asyncio.to_thread(self._oom_killed, spec.sandbox_id)
                await self._discard(spec.sandbox_id, agent)
                cause = "out of memory" if oom else "killed from outside"
                message = (
                    f"the sandbox's container ended under the command ({cause}); "
                    "a fresh one starts with the next command"
                )
                return _failed(message, Limit.MEMORY if oom else None, merge_stderr, started)
            except BaseException:
                # Cancelled mid-request: the link is in an unknown state, so hang up.
                self._forget(spec.sandbox_id, agent)
                raise
            before, link.counters = link.counters, reply.counters
        limit = reply.limit
        # After every command, so a limit is never blamed on a later one.
        hit = _counter_hit(before, reply.counters)
        if hit is Limit.MEMORY or (hit is not None and limit is None):
            limit = hit
        truncated = reply.seen > len(reply.stdout) + len(reply.stderr)
        if truncated and limit is None:
            limit = Limit.OUTPUT
        return ExecResult(
            exit_code=reply.exit_code,
            stdout=reply.stdout.decode(errors="replace"),
            stderr=reply.stderr.decode(errors="replace"),
            truncated=truncated,
            limit=limit,
            duration=time.monotonic() - started,
        )

    # ---- agents ----------------------------------------------------------------------

    async def _agent(self, spec: SandboxSpec) -> _Agent:
        """This sandbox's agent, launching a container when there is none that fits."""
        labels = _labels(spec, self._settings)
        agent = self._agents.get(spec.sandbox_id)
        if agent is not None and agent.labels == labels and agent.usable():
            return agent
        if agent is not None:  # lost, or made for another worktree or role under the same id
            self._forget(spec.sandbox_id, agent)
        await self._removal_done(spec.sandbox_id)  # stopped a moment ago: let that finish
        directory = self._runtime / f"{_safe(spec.sandbox_id)}.{secrets.token_hex(4)}"
        listener = await asyncio.to_thread(self._launch, spec, labels, directory)

        async def handshake() -> AgentLink:
            try:
                return await self._handshake(spec.sandbox_id, listener)
            finally:
                listener.close()
                remove_directory(directory)

        task = asyncio.ensure_future(handshake())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        agent = _Agent(labels=labels, handshake=task)
        self._agents[spec.sandbox_id] = agent
        return agent

    async def _handshake(self, sandbox_id: str, listener: socket.socket) -> AgentLink:
        """Wait for the new container's agent to connect and say hello."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + AGENT_START_SECONDS
        accept = asyncio.ensure_future(loop.sock_accept(listener))
        problem: str | None = None
        try:
            while not accept.done():
                done, _ = await asyncio.wait({accept}, timeout=AGENT_POLL_SECONDS)
                if done:
                    break
                problem = await asyncio.to_thread(self._not_running, sandbox_id)
                if problem is None and loop.time() > give_up:
                    problem = f"no answer within {AGENT_START_SECONDS:g} s"
                if problem is not None:
                    break
        finally:
            accept.cancel()
        link = None
        if problem is None:
            try:
                link = await AgentLink.connect(accept.result()[0])
            except (AgentLost, OSError) as exc:
                problem = str(exc)
        if link is not None and not link.undumpable:
            link.close()
            problem = (
                "it cannot make itself non-dumpable (no ctypes in the image's python3?), "
                "so commands could trace it; use an image with the full python3"
            )
        if link is None or problem is not None:
            await asyncio.to_thread(self._remove_container, sandbox_id)
            raise SandboxUnavailable(f"the sandbox's exec agent did not start: {problem}")
        return link

    def _forget(self, sandbox_id: str, agent: _Agent) -> None:
        agent.abandon()
        if self._agents.get(sandbox_id) is agent:
            del self._agents[sandbox_id]

    async def _discard(self, sandbox_id: str, agent: _Agent) -> None:
        self._forget(sandbox_id, agent)
        await asyncio.to_thread(self._remove_container, sandbox_id)

    # ---- blocking Docker calls and files (run in threads) ------------------------------

    def _launch(self, spec: SandboxSpec, labels: dict[str, str], directory: Path) -> socket.socket:
        """Make the runtime directory and start the container; the listening socket."""
        self._runtime.mkdir(mode=0o700, parents=True, exist_ok=True)  # other users: keep out
        if writable(spec.role):
            hand_over(Path(labels[LABEL_WORKTREE]), self._settings)
        listener = listen(directory)
        try:
            self._create_container(spec, labels, directory)
        except BaseException:
            listener.close()
            remove_directory(directory)
            raise
        return listener

    def _create_container(self, spec: SandboxSpec, labels: dict[str, str], directory: Path) -> None:
        worktree = Path(labels[LABEL_WORKTREE])
        mounts = [
            Mount(mirror, mirror, type="bind", read_only=True) for mirror in mirror_mounts(spec)
        ]
        mounts.append(
            Mount(WORKSPACE, str(worktree), type="bind", read_only=not writable(spec.role))
        )
        dot_git = worktree / ".git"
        if dot_git.exists() and not dot_git.is_symlink():
            mounts.append(Mount(f"{WORKSPACE}/.git", str(dot_git), type="bind", read_only=True))
        mounts.append(Mount(RUN_MOUNT, str(directory), type="bind", read_only=True))
        s = self._settings
        memory = f"{s.sandbox_memory_mb}m"
        api = self._client.api
        try:
            host_config = api.create_host_config(
                network_mode="none",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges", f"seccomp={self._seccomp}"],
                read_only=True,
                tmpfs={"/tmp": f"rw,nosuid,nodev,size={TMPFS_SIZE},mode=1777"},
                mounts=mounts,
                mem_limit=memory,
                memswap_limit=memory,
                nano_cpus=int(s.sandbox_cpus * 1e9),
                pids_limit=s.sandbox_pids_limit,
                ulimits=[
                    Ulimit(name="fsize", soft=s.sandbox_file_bytes, hard=s.sandbox_file_bytes),
                    Ulimit(name="nofile", soft=MAX_OPEN_FILES, hard=MAX_OPEN_FILES),
                    Ulimit(name="core", soft=0, hard=0),
                ],
            )
            for attempt in (1, 2):
                try:
                    created = api.create_container(
                        s.sandbox_image,
                        name=_container_name(spec.sandbox_id),
                        entrypoint=AGENT_ARGV,  # PID 1 is the agent: no docker-init
                        user=labels[LABEL_OWNER],  # the agent and its commands
                        working_dir=WORKSPACE,
                        environment=SANDBOX_ENV,
                        hostname="sandbox",
                        labels=labels,
                        host_config=host_config,
                        detach=True,
                        use_config_proxy=False,  # no proxy variables from the host's config
                    )
                except APIError as exc:
                    if exc.status_code != 409 or attempt == 2:
                        raise
                    # A container of an earlier agent (lost, stopped, another role): redo it.
                    self._remove_container(spec.sandbox_id)
                    continue
                api.start(created["Id"])
                return
        except DockerException as exc:
            raise SandboxUnavailable(f"cannot start the sandbox container: {exc}") from exc

    def _not_running(self, sandbox_id: str) -> str | None:
        """Why the container does not run (with the agent's last words), or None."""
        try:
            container = self._client.containers.get(_container_name(sandbox_id))
            if container.status == "running":
                return None
            logs = container.logs(tail=5).decode(errors="replace").strip()
        except NotFound:
            return "the container is gone"
        except DockerException as exc:
            return f"Docker failed: {exc}"
        code = container.attrs.get("State", {}).get("ExitCode")
        return f"the container exited ({code}): {logs or 'no output'}"

    def _oom_killed(self, sandbox_id: str) -> bool:
        """Whether the OOM killer struck the container (once it has stopped: the agent is gone)."""
        name = _container_name(sandbox_id)
        try:
            # Docker records the OOM event a moment after the agent's connection drops.
            self._client.api.wait(name, timeout=OOM_REPORT_SECONDS)
            state = self._client.api.inspect_container(name)["State"]
        except (DockerException, OSError):  # requests errors are OSErrors
            return False
        return bool(state.get("OOMKilled"))

    def _kill_container(self, sandbox_id: str) -> None:
        try:
            self._client.api.kill(_container_name(sandbox_id))
        except APIError as exc:
            if exc.status_code not in (404, 409):  # gone, or not running any more
                raise SandboxUnavailable(f"Docker failed: {exc}") from exc
        except DockerException as exc:
            raise SandboxUnavailable(f"Docker failed: {exc}") from exc

    def _remove_container(self, sandbox_id: str) -> None:
        with contextlib.suppress(NotFound):
            try:
                self._client.api.remove_container(_container_name(sandbox_id), force=True)
            except DockerException as exc:
                raise SandboxUnavailable(f"Docker failed: {exc}") from exc

    def _remove(self, filters: dict[str, str], sandboxes: Callable[[str], bool]) -> None:
        try:
            containers = self._client.containers.list(
                all=True, filters=filters, ignore_removed=True
            )
        except DockerException as exc:
            raise SandboxUnavailable(f"Docker failed: {exc}") from exc
        for container in containers:
            with contextlib.suppress(NotFound):
                container.remove(force=True)
        for sandbox_id, directory in self._runtime_dirs().items():
            if sandboxes(sandbox_id):
                remove_directory(directory)

    def _runtime_dirs(self) -> dict[str, Path]:
        """Runtime directories left by launches (of a worker that died mid-start), by sandbox."""
        try:
            entries = list(self._runtime.iterdir())
        except OSError:
            return {}
        return {entry.name.rpartition(".")[0]: entry for entry in entries}


def _labels(spec: SandboxSpec, settings: Settings) -> dict[str, str]:
    """What a container is for: a running one is reused only when all of it still holds."""
    worktree = resolve_worktree(spec)
    uid, gid = sandbox_identity(worktree, settings)
    return {
        LABEL_TASK: _task_of(spec.sandbox_id),
        LABEL_SANDBOX: spec.sandbox_id,
        LABEL_WORKTREE: str(worktree),
        LABEL_ROLE: spec.role.value,
        LABEL_OWNER: f"{uid}:{gid}",
    }


def _counter_hit(before: tuple[int, int], now: tuple[int, int]) -> Limit | None:
    """Which cgroup limit bit between two readings of (OOM kills, refused forks)."""
    if now[0] > before[0]:
        return Limit.MEMORY
    if now[1] > before[1]:
        return Limit.PIDS
    return None


def _failed(message: str, limit: Limit | None, merge: bool, started: float) -> ExecResult:
    """A command that the sandbox, not the command, ended."""
    text = f"[sandbox] {message}\n"
    return ExecResult(
        exit_code=None,
        stdout=text if merge else "",
        stderr="" if merge else text,
        limit=limit,
        duration=time.monotonic() - started,
    )


def _task_of(sandbox_id: str) -> str:
    """`<task_id>-<index>` -> `<task_id>`."""
    head, _, tail = sandbox_id.rpartition("-")
    return head if head and tail.isdigit() else sandbox_id


def _safe(sandbox_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", sandbox_id)


def _container_name(sandbox_id: str) -> str:
    return "switchboard-" + _safe(sandbox_id)
