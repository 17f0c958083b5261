"""The host's end of a Docker sandbox's exec agent (`_agent.py`): listen, hello, run.

Per container launch the host makes a runtime directory holding a copy of the
agent and a socket it listens on; the directory is mounted read-only into the
container, whose PID 1 is the agent. The agent connects once and says hello
(with the cgroup counters as they stand); the host then closes the listener and
removes the directory, so nothing else can ever connect. Commands are requests
on that one connection, one at a time.

`AgentHandle` is one launch as the Docker backend tracks it: the handshake it
awaits, then the link.

Nothing the agent sends is trusted beyond its shape: sizes are checked against
what was asked for, and a malformed reply counts as a lost agent.

Protocol, one request at a time on the connection. Hello (agent -> host, once):
a JSON line `{"counters": [oom_kills, refused_forks], "undumpable": bool,
"filtered": bool}`.
Request: a JSON line `{"argv", "stdin" (a byte count or null), "timeout",
"keep", "ceiling", "merge_stderr"}` then the stdin bytes. Reply: a JSON line
`{"exit_code", "limit", "seen", "stdout", "stderr", "counters"}` (`stdout` and
`stderr` are byte counts) then those bytes. `limit` is "timeout", "output" or
"pids" when the agent itself stopped the command; the host reads memory and
refused forks from the counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activities.sandbox import _agent, _agent_harden
from activities.sandbox._base import Limit

RUN_MOUNT = "/run/switchboard"
"""Where the runtime directory appears in the container (read-only)."""
SCRIPT = "agent.py"
SOCKET = "agent.sock"
# -I: nothing from the environment or user site; -S: no site import (stdlib only, starts sooner).
AGENT_ARGV = ["python3", "-I", "-S", f"{RUN_MOUNT}/{SCRIPT}", f"{RUN_MOUNT}/{SOCKET}"]
MAX_REPLY_LINE = 64 * 1024
HELLO_TIMEOUT_SECONDS = 10.0
SETTLE_SECONDS = 2 * _agent.REAP_SECONDS
"""After its deadline, how long the agent may take to kill, drain and reap."""


class AgentLost(Exception):
    """The agent hung up or broke the protocol (container gone, agent killed)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One command as the agent reports it."""

    exit_code: int | None
    limit: Limit | None
    seen: int
    stdout: bytes
    stderr: bytes
    counters: tuple[int, int]
    """The container's OOM kills and refused forks so far."""


def listen(directory: Path, seccomp: bytes) -> socket.socket:
    """Make the runtime directory: the agent script, its hardening and the seccomp
    program it loads onto itself, and a socket listening for it.

    The socket is connectable by any uid (the container runs as the worktree
    owner); the directory's parent keeps other users of the host out.
    """
    directory.mkdir(mode=0o755)
    shutil.copyfile(_agent.__file__, directory / SCRIPT)
    (directory / SCRIPT).chmod(0o644)
    shutil.copyfile(_agent_harden.__file__, directory / _agent.HARDEN)
    (directory / _agent.HARDEN).chmod(0o644)
    (directory / _agent.FILTER).write_bytes(seccomp)
    (directory / _agent.FILTER).chmod(0o644)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # sun_path holds 108 bytes and the data directory may be deeper: bind by fd.
        fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
        try:
            listener.bind(f"/proc/self/fd/{fd}/{SOCKET}")
        finally:
            os.close(fd)
        (directory / SOCKET).chmod(0o666)
        listener.listen(1)
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return listener


class AgentLink:
    """A connected agent; `run` one command at a time (callers serialize)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hello: dict[str, Any]
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.counters = _counters(hello.get("counters"))
        self.undumpable = hello.get("undumpable") is True
        self.filtered = hello.get("filtered") is True

    @classmethod
    async def connect(cls, conn: socket.socket) -> AgentLink:
        """The link over the agent's accepted connection, once it said hello."""
        reader, writer = await asyncio.open_unix_connection(sock=conn, limit=MAX_REPLY_LINE)
        try:
            line = await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT_SECONDS)
            hello = json.loads(line)
            if not isinstance(hello, dict):
                raise ValueError(f"hello {line[:80]!r}")
            return cls(reader, writer, hello)
        except (TimeoutError, ValueError, OSError) as exc:
            writer.close()
            raise AgentLost(f"no hello from the agent: {exc}") from exc

    @property
    def alive(self) -> bool:
        return not (self._reader.at_eof() or self._writer.is_closing())

    def close(self) -> None:
        """Hang up: the agent kills what runs and exits, and its container stops."""
        self._writer.close()

    async def run(
        self,
        argv: list[str],
        stdin: bytes | None,
        *,
        timeout: float,
        keep: int,
        ceiling: int,
        merge_stderr: bool,
    ) -> Reply:
        """Run one command; the agent enforces `timeout`, `keep` and `ceiling`.

        Raises:
            AgentLost: the connection dropped or the reply was malformed.
        """
        request = {
            "argv": argv,
            "stdin": None if stdin is None else len(stdin),
            "timeout": timeout,
            "keep": keep,
            "ceiling": ceiling,
            "merge_stderr": merge_stderr,
        }
        try:
            self._writer.write(json.dumps(request).encode() + b"\n")
            if stdin:
                self._writer.write(stdin)
            await self._writer.drain()
            header = _header(json.loads(await self._reader.readline()), keep)
            stdout = await self._reader.readexactly(header["stdout"])
            stderr = await self._reader.readexactly(header["stderr"])
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            # ValueError: a line over the limit, bad JSON, or a malformed header.
            self.close()
            raise AgentLost(f"the exec agent was lost: {type(exc).__name__}: {exc}") from exc
        return Reply(
            exit_code=header["exit_code"],
            limit=Limit(header["limit"]) if header["limit"] else None,
            seen=header["seen"],
            stdout=stdout,
            stderr=stderr,
            counters=_counters(header["counters"]),
        )


class AgentStopped(Exception):
    """The sandbox was stopped while this call waited for it."""


@dataclass(eq=False)
class AgentHandle:
    """One container's exec agent as the backend knows it: its handshake, then its link."""

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
            AgentStopped: `stop` came first.
        """
        await asyncio.wait({self.handshake})
        if self.stopped or self.handshake.cancelled():
            raise AgentStopped
        return self.handshake.result()

    def abandon(self) -> None:
        """Hang up (the agent then kills what runs and exits) or stop waiting for it."""
        self.stopped = True
        self.handshake.cancel()
        link = self.link()
        if link is not None:
            link.close()


def _header(data: Any, keep: int) -> dict[str, Any]:
    """A reply header checked field by field (ValueError when anything is off)."""
    if not isinstance(data, dict):
        raise ValueError("reply is not an object")
    sizes = [data.get(key) for key in ("seen", "stdout", "stderr")]
    if not all(isinstance(n, int) and n >= 0 for n in sizes):
        raise ValueError(f"bad sizes {sizes}")
    if data["stdout"] + data["stderr"] > keep:
        raise ValueError("more output than the limit")
    code = data.get("exit_code")
    if code is not None and not isinstance(code, int):
        raise ValueError(f"bad exit code {code!r}")
    if data.get("limit") not in (None, Limit.TIMEOUT, Limit.OUTPUT, Limit.PIDS):
        raise ValueError(f"bad limit {data.get('limit')!r}")
    _counters(data.get("counters"))
    return data


def _counters(value: Any) -> tuple[int, int]:
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(n, int) and n >= 0 for n in value)
    ):
        return value[0], value[1]
    raise ValueError(f"bad counters {value!r}")


def remove_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(directory)
