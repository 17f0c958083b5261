"""The real components a benchmark runs against, started and stopped by it.

A dev server on a free port with its own SQLite file, the scripted model as its
own process (as a hosted model would be), Settings pointing at both, worker
processes, and /proc readings (RSS, CPU seconds) of any of them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from entrypoints.devserver import DevServer
from entrypoints.stack import settings_env
from switchboard.model_server import ModelServerHandle, Scenario
from switchboard.settings import Settings
from testkit import servers

ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = ROOT / ".switchboard" / "bench"
"""Built once and kept: the large generated repository."""

MODEL_LATENCY_MS = 100
"""Delay before every model answer: the issue's default, identical on both sides."""
MODEL_TOKEN_RATE = 1000.0
"""Completion tokens per second. Fast for a hosted model, so orchestration time is
not hidden behind model time."""

TRANSFER_POLL_FLAG = "history.transferProcessorMaxPollRPS"
"""The dev-server setting behind the ~40 ms per activity (see docs/benchmarks.md, B1)."""
TUNED_DEV_SERVER = (
    "--dynamic-config-value",
    f"{TRANSFER_POLL_FLAG}=1000",
    "--sqlite-pragma",
    "journal_mode=WAL",
    "--sqlite-pragma",
    "synchronous=NORMAL",
)
"""The two dev-server fixes B1 measures: the transfer-queue read rate, and SQLite in WAL
mode with one fsync per checkpoint instead of one per commit."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_LINE = "worker polling"
"""What `entrypoints.worker.serve` logs once its pollers are built."""


def ships_tuned() -> bool:
    """Whether `entrypoints.devserver.DevServer` already starts with the B1 fixes."""
    argv = DevServer(Path("probe.db")).command()
    return all(a in argv for a in TUNED_DEV_SERVER if not a.startswith("--"))


@contextlib.contextmanager
def model_process(
    scenario: Scenario,
    work: Path,
    *,
    latency_ms: int = MODEL_LATENCY_MS,
    token_rate: float = MODEL_TOKEN_RATE,
) -> Iterator[ModelServerHandle]:
    """`testkit.model_process` at the benchmarks' model speed."""
    with servers.model_process(
        scenario, work, latency_ms=latency_ms, token_rate=token_rate
    ) as handle:
        yield handle


def pids_named(*names: str) -> list[int]:
    """Processes whose command name is one of `names` (read from /proc, nothing signalled)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in names:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def bench_settings(
    work: Path, temporal_address: str, model_port: int, **overrides: object
) -> Settings:
    """Settings for one benchmark run: its own data dir, queues and host id."""
    values: dict[str, object] = {
        "data_dir": work / "data",
        "temporal_address": temporal_address,
        "task_queue": f"bench-{uuid.uuid4().hex[:8]}",
        "host_id": f"bench-{uuid.uuid4().hex[:8]}",
        "model_server_port": model_port,
        "sandbox": os.environ.get("SWITCHBOARD_SANDBOX", "auto"),
        "llm_timeout_seconds": 60.0,
        "worker_metrics_port": 0,
        "repo_roots": [work],  # the benchmark's repositories live in its work dir
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@dataclass
class WorkerProcess:
    """A `switchboard worker` process (`entrypoints.worker.run_worker`), as deployed."""

    settings: Settings
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None
    started_at: float = 0.0
    _ready_lines: int = 0

    def start(self) -> float:
        """Spawn it; returns the monotonic time of the spawn."""
        code = (
            "from switchboard.settings import Settings; from entrypoints.worker import run_worker;"
            "run_worker(Settings(_env_file=None))"
        )
        env = settings_env(self.settings)
        env.pop("OPENAI_API_KEY", None)
        env.pop("OPENAI_BASE_URL", None)
        env.update(_all_settings_env(self.settings))
        self._ready_lines = self._log_text().count(READY_LINE)
        self._log = self.log_path.open("ab")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            start_new_session=True,
        )
        return self.started_at

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Block until the worker logs that it polls; returns seconds since the spawn."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                tail = "\n".join(self._log_text().splitlines()[-15:])
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{tail}")
            if self._log_text().count(READY_LINE) > self._ready_lines:
                return time.monotonic() - self.started_at
            time.sleep(0.02)
        raise RuntimeError(f"worker not ready within {timeout} s; see {self.log_path}")

    def _log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL the worker and everything it started (bwrap children too)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None


def _all_settings_env(settings: Settings) -> dict[str, str]:
    """Every plain setting as `SWITCHBOARD_*`, so a child sees exactly these settings."""
    env = {}
    for name, value in settings.model_dump().items():
        if isinstance(value, str | int | float | bool | Path) and not name.startswith("llm_api"):
            env[f"SWITCHBOARD_{name.upper()}"] = str(value)
    return env


# ---- /proc readings ------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU of a process (and, with `children`, of its reaped children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command: state is field 3, so utime/stime/cutime/cstime are 14-17 (1-based).
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    ticks = utime + stime + ((cutime + cstime) if children else 0)
    return ticks / CLK_TCK


def self_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A scratch directory for one benchmark run, removed afterwards (kept, and
    printed, with BENCH_KEEP=1: logs and histories to look at)."""
    if os.environ.get("BENCH_KEEP") == "1":
        kept = Path(tempfile.mkdtemp(prefix=f"sb-bench-{prefix}-"))
        print(f"keeping {kept}", flush=True)
        yield kept
        return
    with tempfile.TemporaryDirectory(
        prefix=f"sb-bench-{prefix}-", ignore_cleanup_errors=True
    ) as path:
        yield Path(path)


def mib(n: float) -> str:
    return f"{n / 1024 / 1024:.0f} MiB" if n >= 10 * 1024 * 1024 else f"{n / 1024 / 1024:.1f} MiB"
