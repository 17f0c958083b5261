"""Run one host process with a deadline and an output cap, killing its whole group.

Shared by the per-call backend: the process is the sandbox launcher, so killing
its process group (and with it the sandbox's PID namespace) stops everything the
command started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from activities.sandbox._base import Limit

CHUNK = 64 * 1024
DRAIN_FACTOR = 16
"""Past the kept output, keep draining up to this many times the limit, then kill.

A chatty test run still reports its exit code; `yes` does not run until the timeout.
"""
MIN_DRAIN_BYTES = 8 * 1024 * 1024
REAP_GRACE_SECONDS = 5.0


@dataclass
class Captured:
    exit_code: int | None
    stdout: bytes
    stderr: bytes
    truncated: bool
    limit: Limit | None
    duration: float


@dataclass
class _Budget:
    """Output kept across stdout and stderr together, and output seen."""

    keep: int
    ceiling: int
    kept: int = 0
    seen: int = 0
    overflowed: bool = False
    on_overflow: Callable[[], None] = field(default=lambda: None)

    async def drain(self, stream: asyncio.StreamReader | None, sink: bytearray) -> None:
        if stream is None:
            return
        while chunk := await stream.read(CHUNK):
            self.seen += len(chunk)
            room = self.keep - self.kept
            if room > 0:
                sink += chunk[:room]
                self.kept += min(room, len(chunk))
            if self.seen > self.ceiling and not self.overflowed:
                self.overflowed = True
                self.on_overflow()


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _feed(proc: asyncio.subprocess.Process, data: bytes | None) -> None:
    if proc.stdin is None:
        return
    try:
        if data:
            proc.stdin.write(data)
            await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the command did not read its input; its exit status says why
    finally:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.close()


async def run_captured(
    argv: Sequence[str],
    *,
    stdin: bytes | None,
    timeout: float,
    output_limit: int,
    merge_stderr: bool,
    env: dict[str, str],
    pass_fds: Sequence[int] = (),
    on_start: Callable[[int], None] = lambda pid: None,
) -> Captured:
    """Run `argv` in a new session; kill the session at the deadline or output ceiling.

    Args:
        argv: the launcher command line.
        stdin: bytes fed to standard input (closed at once when None).
        timeout: seconds before the whole process group is killed.
        output_limit: bytes of output kept, stdout and stderr together.
        merge_stderr: send stderr into the stdout pipe (interleaved as written).
        env: the launcher's environment.
        pass_fds: descriptors the launcher inherits.
        on_start: called with the pid once the process exists (for bookkeeping).

    Long because: the process, its pipe readers and the kill at the deadline share
    one scope, so no path (timeout, overflow, cancel) leaves a reader or a process.
    """
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
        env=env,
        pass_fds=tuple(pass_fds),
        start_new_session=True,
    )
    on_start(proc.pid)
    out, err = bytearray(), bytearray()
    budget = _Budget(
        keep=output_limit,
        ceiling=max(output_limit * DRAIN_FACTOR, MIN_DRAIN_BYTES),
        on_overflow=lambda: kill_group(proc.pid),
    )
    io = asyncio.gather(
        _feed(proc, stdin), budget.drain(proc.stdout, out), budget.drain(proc.stderr, err)
    )

    async def finish() -> int:
        await io
        return await proc.wait()

    done = asyncio.ensure_future(finish())
    limit: Limit | None = None
    exit_code: int | None = None
    try:
        exit_code = await asyncio.wait_for(asyncio.shield(done), timeout)
    except TimeoutError:
        limit = Limit.TIMEOUT
    finally:
        if proc.returncode is None:
            kill_group(proc.pid)
    if limit is not None:
        # Everything in the group is dead, so the pipes close and the readers end.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, REAP_GRACE_SECONDS)
    if budget.overflowed and limit is None:
        limit, exit_code = Limit.OUTPUT, None
    truncated = budget.seen > budget.kept
    if truncated and limit is None:
        limit = Limit.OUTPUT
    return Captured(
        exit_code=exit_code,
        stdout=bytes(out),
        stderr=bytes(err),
        truncated=truncated,
        limit=limit,
        duration=time.monotonic() - started,
    )


STATUS_FD_READ_LIMIT = 64 * 1024


def read_status(fd: int) -> dict[str, Any]:
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
