"""`switchboard up`: Temporal (embedded unless one answers), model, worker and API.

Every component runs as its own process, as it would in a deployment; the stack
starts them in dependency order, waits until each answers, and stops them all in
reverse order on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NoReturn

from rich.console import Console

from entrypoints.devserver import DevServer, port_open, split_address, tied_to_parent
from switchboard.settings import Settings

LOG_TAIL_LINES = 20
"""How much of a dead component's log `switchboard up` and `demo` print."""


class StackError(RuntimeError):
    pass


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log file (empty when there is none)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process see the same settings."""
    env = dict(os.environ)
    env.update(
        {
            "SWITCHBOARD_DATA_DIR": str(settings.data_dir.resolve()),
            "SWITCHBOARD_TEMPORAL_ADDRESS": settings.temporal_address,
            "SWITCHBOARD_TEMPORAL_NAMESPACE": settings.temporal_namespace,
            "SWITCHBOARD_TASK_QUEUE": settings.task_queue,
            "SWITCHBOARD_HOST_ID": settings.host_id,
            "SWITCHBOARD_MODEL_SERVER_HOST": settings.model_server_host,
            "SWITCHBOARD_MODEL_SERVER_PORT": str(settings.model_server_port),
            "SWITCHBOARD_API_HOST": settings.api_host,
            "SWITCHBOARD_API_PORT": str(settings.api_port),
            "SWITCHBOARD_SANDBOX": settings.sandbox,
            "SWITCHBOARD_WORKER_METRICS_PORT": str(settings.worker_metrics_port),
            "SWITCHBOARD_TASK_WORKER_NICE": str(settings.task_worker_nice),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if settings.repo_roots is not None:
        env["SWITCHBOARD_REPO_ROOTS"] = json.dumps([str(root) for root in settings.repo_roots])
    return env


@dataclass
class _Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes]
    log: IO[bytes]


@dataclass
class Stack:
    """The running components; use as a context manager."""

    settings: Settings
    console: Console = field(default_factory=lambda: Console(stderr=True))
    model_args: list[str] = field(default_factory=list)
    dev_server: DevServer | None = None
    children: list[_Child] = field(default_factory=list)

    @property
    def logs_dir(self) -> Path:
        return self.settings.data_dir / "logs"

    def start(self) -> None:
        self._preflight()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        try:
            self._start_temporal()
            if self.settings.uses_scripted_model:
                self._spawn(
                    "model-server",
                    [
                        "model-server",
                        "--host",
                        self.settings.model_server_host,
                        "--port",
                        str(self.settings.model_server_port),
                        *self.model_args,
                    ],
                    (self.settings.model_server_host, self.settings.model_server_port),
                )
            self._spawn("worker", ["worker"], None)
            self._spawn(
                "api", ["api"], (self.settings.api_host, self.settings.api_port), timeout=60
            )
        except BaseException:
            self.stop()
            raise

    def _preflight(self) -> None:
        """Refuse to start anything when the worker could not run here (doctor's checks)."""
        from entrypoints.doctor import preflight

        failed = preflight(self.settings)
        if failed:
            found = "\n".join(f"  {check.name}: {check.detail}" for check in failed)
            raise StackError(
                f"this host cannot run a worker (`switchboard doctor` says more):\n{found}"
            )

    def dead_child(self) -> str | None:
        """What to tell the user about the first component that exited, if any did."""
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                log = self.logs_dir / f"{child.name}.log"
                child.log.flush()
                return f"{child.name} exited with {code}; the end of {log}:\n{log_tail(log)}"
        return None

    async def watch_children(self, interval: float = 0.5) -> NoReturn:
        """Raise `StackError` as soon as a component exits (run beside the work)."""
        while True:
            dead = self.dead_child()
            if dead is not None:
                raise StackError(dead)
            await asyncio.sleep(interval)

    def _start_temporal(self) -> None:
        host, port = split_address(self.settings.temporal_address)
        if port_open(host, port):
            self.console.print(f"[dim]Temporal: using the server at {host}:{port}[/dim]")
            return
        self.dev_server = DevServer(
            self.settings.temporal_db.resolve(),
            address=self.settings.temporal_address,
            ui_port=self.settings.temporal_ui_port,
            log_file=self.logs_dir / "temporal.log",
            tied=True,
        )
        self.dev_server.start()
        self.console.print(
            f"[dim]Temporal: embedded dev server on {host}:{port}, "
            f"state in {self.settings.temporal_db}[/dim]"
        )

    def _spawn(
        self, name: str, args: list[str], wait_for: tuple[str, int] | None, timeout: float = 30
    ) -> None:
        if wait_for and port_open(*wait_for):
            raise StackError(f"{name}: port {wait_for[0]}:{wait_for[1]} is already taken")
        log = (self.logs_dir / f"{name}.log").open("ab")
        argv = [sys.executable, "-m", "entrypoints", *args]
        process = self._popen(argv, log)
        self.children.append(_Child(name, argv, process, log))
        if wait_for is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = self.dead_child()  # this one, or one started before it
            if dead is not None:
                raise StackError(dead)
            if port_open(*wait_for):
                return
            time.sleep(0.1)
        raise StackError(f"{name} did not answer on {wait_for[0]}:{wait_for[1]} in {timeout} s")

    def _popen(self, argv: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
        """A component in its own session (Ctrl-C reaches only the stack), logging to `log`,
        and stopped if the stack dies without stopping it (SIGKILL: `tied_to_parent`)."""
        return subprocess.Popen(
            tied_to_parent(argv),
            env=settings_env(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def child(self, name: str) -> subprocess.Popen[bytes]:
        for child in self.children:
            if child.name == name:
                return child.process
        raise KeyError(name)

    def restart(self, name: str) -> None:
        """Start a stopped child again with the same arguments (used by durability tests)."""
        for child in self.children:
            if child.name == name:
                if child.process.poll() is None:
                    raise StackError(f"{name} is still running")
                child.process = self._popen(child.argv, child.log)
                return
        raise KeyError(name)

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
            child.log.close()
        self.children.clear()
        if self.dev_server is not None:
            self.dev_server.stop()
            self.dev_server = None

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> list[tuple[str, str]]:
        s = self.settings
        rows = [
            ("API", f"{s.api_base_url}  (OpenAPI docs at /docs)"),
            ("Temporal", s.temporal_address),
        ]
        if self.dev_server is not None and self.dev_server.ui_port:
            rows.append(("Temporal UI", f"http://{self.dev_server.host}:{self.dev_server.ui_port}"))
        rows.append(("Model", s.model_base_url + ("  (scripted)" if s.uses_scripted_model else "")))
        rows.append(("Logs", str(self.logs_dir)))
        auth = (
            "OFF: local mode, loopback only, callers are who they say they are"
            if s.auth_is_local
            else f"{s.auth_mode} (bearer tokens required)"
        )
        rows.append(("Auth", auth))
        return rows


def run_up(settings: Settings) -> None:
    """Blocking entry point of `switchboard up`: runs until Ctrl-C or SIGTERM."""
    console = Console()
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    # Both, explicitly: a process started in the background by a non-interactive shell
    # (nohup, `cmd &`) inherits SIGINT ignored, and Ctrl-C would then do nothing.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with Stack(settings, console=console) as stack:
        for label, value in stack.describe():
            console.print(f"[bold]{label:12}[/bold] {value}")
        console.print("[green]Switchboard is up.[/green] Ctrl-C stops everything.")
        try:
            while not stopping:
                dead = stack.dead_child()
                if dead is not None:
                    raise StackError(dead)
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        console.print("stopping…")
