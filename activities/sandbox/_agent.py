"""The exec agent: PID 1 of a Docker sandbox, running the host's commands one at a time.

Standard library only: the host copies this file next to its socket and the
container starts it as `python3 -I -S agent.py SOCKET` with the image's own
python3 (3.11 or later), so the image needs no rebuild. It connects once to the
host's socket and serves that one connection until the host hangs up, then exits,
and the container stops with it.

Being the container's PID 1 is what protects it from the commands it runs: the
kernel drops every signal sent from inside the container to a PID 1 that has no
handler for it (SIGKILL included), `kill -1` spares it, and it makes itself
non-dumpable so that commands, which run as the same uid, can neither trace it nor
read its memory. It reaps every orphan as it exits, and after each command
SIGKILLs every other process in the container.

Before it connects, it hardens itself (`_agent_harden.py`, copied beside it):
non-dumpable, and Switchboard's seccomp filter loaded on top of Docker's profile.

The protocol is described in `_agent_link.py`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import runpy
import selectors
import signal
import socket
import subprocess
import sys
import time
from typing import IO, Any

WORKSPACE = "/workspace"
CHUNK = 64 * 1024
MAX_REQUEST_LINE = 8 * 1024 * 1024
"""Room for the longest argv the kernel accepts."""
REAP_SECONDS = 5.0
"""After a kill, how long the agent waits for the processes to go (D state aside, ms)."""
HARDEN = "harden.py"
"""Next to this script: `_agent_harden.py`, run with `runpy` (`-I`: no `sys.path` entry)."""
FILTER = "seccomp.bpf"
"""Next to the socket: Switchboard's seccomp program (BPF), stacked on Docker's profile."""
COUNTERS = (
    # (key, cgroup v2 file, cgroup v1 file): the container's OOM kills and refused forks.
    ("oom_kill", "/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"),
    ("max", "/sys/fs/cgroup/pids.events", "/sys/fs/cgroup/pids/pids.events"),
)


def counters() -> list[int]:
    """The container's OOM-kill and refused-fork counts (0 where the file is missing)."""
    found = []
    for key, *paths in COUNTERS:
        value = 0
        for path in paths:
            try:
                with open(path) as events:
                    for line in events:
                        name, _, number = line.partition(" ")
                        if name == key:
                            value = int(number)
                break
            except (OSError, ValueError):
                continue
        found.append(value)
    return found


def harden(directory: str) -> tuple[bool, bool]:
    """(non-dumpable, seccomp filter loaded): both are required by the host."""
    try:
        functions = runpy.run_path(os.path.join(directory, HARDEN))
        return functions["undumpable"](), functions["load_filter"](f"{directory}/{FILTER}")
    except (OSError, KeyError, ImportError, SyntaxError):
        return False, False


def prefer_for_oom() -> None:
    """In the child before exec: the OOM killer takes commands before the agent."""
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as adj:
        adj.write("1000")


def kill_others() -> None:
    """SIGKILL every process in the container but this one (PID 1 is spared by -1)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(-1, signal.SIGKILL)


class Channel:
    """The host connection: buffered reads of lines and exact byte counts."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = bytearray()

    def line(self) -> bytes | None:
        while (end := self.buffer.find(b"\n")) < 0:
            if len(self.buffer) > MAX_REQUEST_LINE or not self._fill():
                return None
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 1]
        return line

    def exact(self, size: int) -> bytes | None:
        while len(self.buffer) < size:
            if not self._fill():
                return None
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def send(self, header: dict[str, Any], *payloads: bytes) -> None:
        self.conn.sendall(json.dumps(header).encode() + b"\n")
        for payload in payloads:
            self.conn.sendall(payload)

    def _fill(self) -> bool:
        chunk = self.conn.recv(CHUNK)
        self.buffer += chunk
        return bool(chunk)


class Capture:
    """A command's output: every byte counted, the first `keep` bytes kept."""

    def __init__(self, keep: int, ceiling: int) -> None:
        self.keep, self.ceiling = keep, ceiling
        self.out, self.err = bytearray(), bytearray()
        self.sinks: dict[int, bytearray] = {}
        """The open output pipes, each to its buffer."""
        self.seen = self.kept = 0

    def take(self, fd: int, chunk: bytes) -> bool:
        """Count and keep a chunk read from `fd`; whether the output is over its ceiling."""
        self.seen += len(chunk)
        room = self.keep - self.kept
        if room > 0:
            self.sinks[fd] += chunk[:room]
            self.kept += min(room, len(chunk))
        return self.seen > self.ceiling


class Agent:
    """Runs each command in a new session and clears the container after it."""

    def __init__(self, channel: Channel, wake: int, undumpable: bool, filtered: bool) -> None:
        self.channel = channel
        self.wake = wake
        """Readable when a child exited (SIGCHLD's wakeup fd)."""
        self.undumpable = undumpable
        self.filtered = filtered

    def serve(self) -> None:
        hello = {"counters": counters(), "undumpable": self.undumpable, "filtered": self.filtered}
        self.channel.send(hello)
        while (line := self.channel.line()) is not None:
            request = json.loads(line)
            stdin = None
            if request["stdin"] is not None:
                stdin = self.channel.exact(int(request["stdin"]))
                if stdin is None:
                    return
            reply = self.run(request, stdin)
            if reply is None:
                return  # the host hung up mid-command
            header, out, err = reply
            self.channel.send(header, out, err)

    def run(
        self, request: dict[str, Any], stdin: bytes | None
    ) -> tuple[dict[str, Any], bytes, bytes] | None:
        argv = [str(arg) for arg in request["argv"]]
        merge = bool(request["merge_stderr"])
        try:
            if not argv:
                raise FileNotFoundError(errno.ENOENT, "empty command")
            proc = self.spawn(argv, stdin is not None, merge)
        except OSError as exc:
            self.clear()
            if exc.errno == errno.EAGAIN:
                return answer(None, "pids", 0, b"", b"")
            name = argv[0] if argv else ""
            message = f"{name}: {exc.strerror}\n".encode()[: int(request["keep"])]
            code = 127 if exc.errno == errno.ENOENT else 126
            out, err = (message, b"") if merge else (b"", message)
            return answer(code, None, len(message), out, err)
        try:
            return self.watch(proc, request, stdin or b"")
        finally:
            if proc.returncode is None:
                proc.returncode = -1  # reaped here, never by subprocess's own bookkeeping
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()

    def spawn(self, argv: list[str], stdin: bool, merge: bool) -> subprocess.Popen[bytes]:
        """Start the command; after a refused fork, clear the container and try once more."""
        for attempt in (1, 2):
            try:
                return subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT if merge else subprocess.PIPE,
                    cwd=WORKSPACE,
                    start_new_session=True,
                    preexec_fn=prefer_for_oom,  # safe: the agent has no other thread
                )
            except OSError as exc:
                if exc.errno != errno.EAGAIN or attempt == 2:
                    raise
                self.clear()
        raise AssertionError("unreachable")

    def watch(
        self, proc: subprocess.Popen[bytes], request: dict[str, Any], stdin: bytes
    ) -> tuple[dict[str, Any], bytes, bytes] | None:
        """Feed, read and time the command; None when the host hung up meanwhile."""
        capture = Capture(int(request["keep"]), int(request["ceiling"]))
        end_by = time.monotonic() + float(request["timeout"])
        selector = self.selector(proc, stdin, capture)
        pending = memoryview(stdin)
        status: int | None = None
        limit: str | None = None
        ended = False  # the command is over: everything else in the container was killed
        try:
            while capture.sinks or status is None:
                if not ended and (status is not None or limit is not None):
                    kill_others()
                    ended, end_by = True, time.monotonic() + REAP_SECONDS
                remaining = end_by - time.monotonic()
                if remaining <= 0:
                    if ended:
                        break  # stuck processes: give up on their output
                    limit = "timeout"
                    continue
                for key, _ in selector.select(remaining):
                    if key.data == "host":
                        kill_others()
                        self.clear()
                        return None
                    if key.data == "wake":
                        status = self.reap(proc.pid, status)
                    elif key.data == "write":
                        pending = self.feed(proc, selector, pending)
                    elif self.drain(key.fd, selector, capture) and limit is None:
                        limit = "output"
        finally:
            selector.close()
        self.clear()
        out, err = bytes(capture.out), bytes(capture.err)
        return answer(exit_code(status, limit), limit, capture.seen, out, err)

    def selector(
        self, proc: subprocess.Popen[bytes], stdin: bytes, capture: Capture
    ) -> selectors.BaseSelector:
        """Watch the host, the SIGCHLD wakeup fd, the command's output and (while there
        is some to write) its input."""
        selector = selectors.DefaultSelector()
        selector.register(self.wake, selectors.EVENT_READ, "wake")
        selector.register(self.channel.conn, selectors.EVENT_READ, "host")
        for pipe, sink in ((proc.stdout, capture.out), (proc.stderr, capture.err)):
            if pipe is not None:
                os.set_blocking(pipe.fileno(), False)
                selector.register(pipe.fileno(), selectors.EVENT_READ, "read")
                capture.sinks[pipe.fileno()] = sink
        if proc.stdin is not None:
            os.set_blocking(proc.stdin.fileno(), False)
            if stdin:
                selector.register(proc.stdin.fileno(), selectors.EVENT_WRITE, "write")
            else:
                proc.stdin.close()
        return selector

    def drain(self, fd: int, selector: selectors.BaseSelector, capture: Capture) -> bool:
        """Read what `fd` holds into `capture`; whether the output just passed its ceiling."""
        chunk = self.read(fd)
        if chunk is None:
            return False
        if not chunk:
            selector.unregister(fd)
            del capture.sinks[fd]
            return False
        return capture.take(fd, chunk)

    def feed(
        self, proc: subprocess.Popen[bytes], selector: selectors.BaseSelector, pending: memoryview
    ) -> memoryview:
        stdin: IO[bytes] | None = proc.stdin
        assert stdin is not None
        try:
            pending = pending[os.write(stdin.fileno(), pending[:CHUNK]) :]
        except BlockingIOError:
            return pending
        except OSError:  # the command closed its input; its exit status says why
            pending = pending[:0]
        if not pending:
            selector.unregister(stdin.fileno())
            stdin.close()
        return pending

    @staticmethod
    def read(fd: int) -> bytes | None:
        try:
            return os.read(fd, CHUNK)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def reap(self, pid: int, status: int | None) -> int | None:
        """Collect every exited child; the command's status when it is among them."""
        with contextlib.suppress(OSError):
            while os.read(self.wake, 4096):
                pass
        while True:
            try:
                child, code = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return status
            if child == 0:
                return status
            if child == pid:
                status = code

    def clear(self) -> None:
        """Kill and reap everything but the agent (bounded: a D-state process may linger)."""
        give_up = time.monotonic() + REAP_SECONDS
        while time.monotonic() < give_up:
            kill_others()
            while True:
                try:
                    child, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    return
                if child == 0:
                    break
            with selectors.DefaultSelector() as selector:
                selector.register(self.wake, selectors.EVENT_READ)
                selector.select(0.05)
            with contextlib.suppress(OSError):
                while os.read(self.wake, 4096):
                    pass


def exit_code(status: int | None, limit: str | None) -> int | None:
    """The command's exit code as a shell reports it; None when the agent stopped it."""
    if limit is not None or status is None:
        return None
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code  # killed by a signal: as a shell says


def answer(
    exit_code: int | None, limit: str | None, seen: int, out: bytes, err: bytes
) -> tuple[dict[str, Any], bytes, bytes]:
    """A reply: its header, then the kept stdout and stderr."""
    header = {
        "exit_code": exit_code,
        "limit": limit,
        "seen": seen,
        "stdout": len(out),
        "stderr": len(err),
        "counters": counters(),
    }
    return header, out, err


def main(argv: list[str]) -> int:
    # A PID 1 receives only the signals it handles: none from commands but SIGCHLD.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    untraceable, filtered = harden(os.path.dirname(argv[1]))
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(argv[1])
    except OSError as exc:
        sys.stderr.write(f"switchboard agent: cannot reach the host at {argv[1]}: {exc}\n")
        return 1
    agent = Agent(Channel(conn), wake_read, untraceable, filtered)
    try:
        agent.serve()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        sys.stderr.write(f"switchboard agent: {type(exc).__name__}: {exc}\n")
        return 1
    finally:
        kill_others()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
