"""Docker backend: one long-lived container per subagent, its PID 1 an exec agent.

`start` creates the container (no network, all capabilities dropped,
no-new-privileges, read-only root, tmpfs /tmp, memory/CPU/pids limits, the
worktree as the only writable mount; `_docker_containers.py`) whose main process
is the exec agent (`_agent.py`, run by the image's python3 as the worktree
owner). The agent connects back to a socket the host listens on
(`_agent_link.py`) and runs each tool command on request: in a new session, with
the time limit and output cap, then SIGKILLs everything else in the container and
reports the cgroup's OOM and refused-fork counters. A command costs 2-3 ms on top
of itself, where a `docker exec` cost ~50 ms through runc plus a second one for
the after-command check. The container start (~0.2 s here) is paid once per
subagent; `start` also waits for the agent's hello (~16 ms of it), so that an
image that cannot run the agent fails the start, not the first tool call. `stop`
/ `remove_task` remove the container; a lost agent (killed, OOM-killed, frozen,
container removed) is reported on the command it ran and replaced on the next
one. Commands on one sandbox run one at a time, since each ends by killing all
the others. Every Docker SDK call is blocking and runs in a thread, off the event
loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import docker
from docker.errors import DockerException

from activities.sandbox import _seccomp
from activities.sandbox._agent_link import (
    SETTLE_SECONDS,
    AgentHandle,
    AgentLink,
    AgentLost,
    AgentStopped,
    Reply,
    remove_directory,
)
from activities.sandbox._base import (
    SANDBOX_ENV,
    ExecResult,
    Limit,
    Sandbox,
    SandboxUnavailable,
    resolve_worktree,
    writable,
)
from activities.sandbox._capture import DRAIN_FACTOR, MIN_DRAIN_BYTES
from activities.sandbox._docker_containers import (
    LABEL_SANDBOX,
    LABEL_TASK,
    RUNTIME_DIR,
    Containers,
    labels_for,
    safe_name,
    task_of,
)
from activities.sandbox._owner import hand_over
from switchboard.contracts import SandboxInfo, SandboxSpec
from switchboard.settings import Settings

log = logging.getLogger(__name__)

API_TIMEOUT_SECONDS = 30
AGENT_START_SECONDS = 20.0
"""How long a new container's agent may take to connect (image on a slow disk)."""
AGENT_POLL_SECONDS = 0.5
"""While waiting for it, how often to check that the container still runs."""


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
            client = client or docker.from_env(timeout=API_TIMEOUT_SECONDS)
        except DockerException as exc:
            raise SandboxUnavailable(f"no Docker daemon answers: {exc}") from exc
        try:
            program = _seccomp.filter_bpf()
        except _seccomp.SeccompUnavailable as exc:
            raise SandboxUnavailable(str(exc)) from exc
        runtime = Path(os.path.abspath(settings.data_dir)) / RUNTIME_DIR
        self._containers = Containers(settings, client, runtime, program)
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._agents: dict[str, AgentHandle] = {}
        self._removals: dict[str, asyncio.Future[None]] = {}

    def check(self) -> None:
        """The daemon answers and the sandbox image exists (blocking)."""
        self._containers.check()

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self, spec: SandboxSpec) -> SandboxInfo:
        if writable(spec.role):  # files host-side git wrote since the last round
            await asyncio.to_thread(hand_over, resolve_worktree(spec), self._settings)
        async with self._locks[spec.sandbox_id]:
            agent = await self._agent(spec, handed_over=True)
            with contextlib.suppress(AgentStopped):
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
        await asyncio.to_thread(self._containers.kill, sandbox_id)
        removal = asyncio.ensure_future(
            asyncio.to_thread(
                self._containers.remove,
                {"label": f"{LABEL_SANDBOX}={sandbox_id}"},
                lambda s: s == safe_name(sandbox_id),
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
        for sandbox_id in [s for s in self._removals if task_of(s) == task_id]:
            await self._removal_done(sandbox_id)
        for sandbox_id in [s for s in self._agents if task_of(s) == task_id]:
            self._agents.pop(sandbox_id).abandon()
        await asyncio.to_thread(
            self._containers.remove,
            {"label": f"{LABEL_TASK}={task_id}"},
            lambda s: task_of(s) == safe_name(task_id),
        )

    async def task_ids(self) -> set[str]:
        return await asyncio.to_thread(self._containers.task_ids)

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
                "seccomp": f"Docker's profile ({self._containers.daemon_profile}), and "
                + _seccomp.describe()
                + " stacked on it by the exec agent (the same program bubblewrap loads)",
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
        """Run one command through the sandbox's agent (the container is made on demand)."""
        # One command at a time per sandbox: each ends by killing all the others.
        async with self._locks[spec.sandbox_id]:
            agent = await self._agent(spec)  # recreates a lost or stopped container
            try:
                link = await agent.connected()
            except AgentStopped:
                return _failed("the sandbox was stopped", None, merge_stderr, time.monotonic())
            started = time.monotonic()
            request = link.run(
                argv,
                stdin,
                timeout=timeout,
                keep=output_limit,
                ceiling=max(output_limit * DRAIN_FACTOR, MIN_DRAIN_BYTES),
                merge_stderr=merge_stderr,
            )
            try:
                reply = await asyncio.wait_for(request, timeout + SETTLE_SECONDS)
            except (TimeoutError, AgentLost) as exc:
                return await self._ended(spec.sandbox_id, agent, exc, merge_stderr, started)
            except BaseException:
                # Cancelled mid-request: the link is in an unknown state, so hang up.
                self._forget(spec.sandbox_id, agent)
                raise
            before, link.counters = link.counters, reply.counters
        return _result(reply, before, started)

    async def _ended(
        self, sandbox_id: str, agent: AgentHandle, exc: Exception, merge: bool, started: float
    ) -> ExecResult:
        """The command the agent did not report: timed out, or the container ended under it."""
        if isinstance(exc, TimeoutError):
            await self._discard(sandbox_id, agent)
            message = "the sandbox did not answer in time; it was reset"
            return _failed(message, Limit.TIMEOUT, merge, started)
        if agent.stopped:
            return _failed("the sandbox was stopped while the command ran", None, merge, started)
        oom = await asyncio.to_thread(self._containers.oom_killed, sandbox_id)
        await self._discard(sandbox_id, agent)
        cause = "out of memory" if oom else "killed from outside"
        message = (
            f"the sandbox's container ended under the command ({cause}); "
            "a fresh one starts with the next command"
        )
        return _failed(message, Limit.MEMORY if oom else None, merge, started)

    # ---- agents ----------------------------------------------------------------------

    async def _agent(self, spec: SandboxSpec, *, handed_over: bool = False) -> AgentHandle:
        """This sandbox's agent, launching a container when there is none that fits.

        `handed_over`: the caller just gave the worktree to the sandbox uid, so a
        launch need not walk it again (a walk of a 50,000-file worktree costs about
        as much as the container start).
        """
        labels = labels_for(spec, self._settings)
        agent = self._agents.get(spec.sandbox_id)
        if agent is not None and agent.labels == labels and agent.usable():
            return agent
        if agent is not None:  # lost, or made for another worktree or role under the same id
            self._forget(spec.sandbox_id, agent)
        await self._removal_done(spec.sandbox_id)  # stopped a moment ago: let that finish
        runtime = self._containers.runtime
        directory = runtime / f"{safe_name(spec.sandbox_id)}.{secrets.token_hex(4)}"
        listener = await asyncio.to_thread(
            self._containers.launch, spec, labels, directory, hand_over_first=not handed_over
        )

        async def handshake() -> AgentLink:
            try:
                return await self._handshake(spec.sandbox_id, listener)
            finally:
                listener.close()
                remove_directory(directory)

        task = asyncio.ensure_future(handshake())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        agent = AgentHandle(labels=labels, handshake=task)
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
                problem = await asyncio.to_thread(self._containers.not_running, sandbox_id)
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
        if link is not None and not (link.undumpable and link.filtered):
            link.close()
            problem = (
                "it cannot make itself non-dumpable or load the seccomp filter (no ctypes "
                "in the image's python3?), so commands could trace it or call what the "
                "filter refuses; use an image with the full python3"
            )
        if link is None or problem is not None:
            await asyncio.to_thread(self._containers.remove_container, sandbox_id)
            raise SandboxUnavailable(f"the sandbox's exec agent did not start: {problem}")
        return link

    def _forget(self, sandbox_id: str, agent: AgentHandle) -> None:
        agent.abandon()
        if self._agents.get(sandbox_id) is agent:
            del self._agents[sandbox_id]

    async def _discard(self, sandbox_id: str, agent: AgentHandle) -> None:
        self._forget(sandbox_id, agent)
        await asyncio.to_thread(self._containers.remove_container, sandbox_id)


def _result(reply: Reply, before: tuple[int, int], started: float) -> ExecResult:
    """The agent's report of a command, with the limit it hit."""
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
