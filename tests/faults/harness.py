"""The fault suite's harness: a worker in its own process that can be SIGKILLed, a
scripted model whose every command leaves an append-only mark, and one end-of-run
checker that every scenario calls.

The checker is the suite's point. Whatever was done to the stack, it asserts:
- the task reached the terminal phase the scenario expects, with the right diff;
- an accepted decision was applied exactly once (one approval record, one merge);
- no command ran twice: each scripted command appends one line to a marker file
  that is committed with the rest, so a repeated command shows as a repeated line;
- nothing was left behind: no worktree, transcript, live sandbox process or
  command cgroup of the task (or of a killed worker) outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from entrypoints.stack import settings_env
from switchboard.model_server import Scenario
from switchboard.models import Phase, TaskResult, TaskStatus
from switchboard.settings import Settings
from testkit import git, status_of, wait_port

WORKERS = 2
"""Workers each fault task runs; each writes notes/log_<n>.txt."""

CGROUP_ROOT = Path("/sys/fs/cgroup")


def marker_lines(subagent: int, *, interrupted: bool = False) -> list[str]:
    """What notes/log_<n>.txt holds when each of worker n's commands ran once; when
    its first command was killed mid-way, the step journal rolls that command back
    and does not run it again, so only the second command's line is there."""
    return [f"{subagent}-b"] if interrupted else [f"{subagent}-a", f"{subagent}-b"]


def fault_scenario(*, command_seconds: float = 2, explorer: bool = False) -> Scenario:
    """Planner: two workers (and an explorer when asked). Worker: two marking commands
    (the first sleeps, so a kill can land inside it), then finish. Explorer and
    reviewer: their roles' fallbacks (finish; approve)."""
    mark = "mkdir -p notes && echo {subagent}-a >> notes/log_{subagent}.txt"
    first = f"{mark} && sleep {command_seconds}"
    second = "mkdir -p notes && echo {subagent}-b >> notes/log_{subagent}.txt"
    plan = {
        "subtasks": [
            {"title": f"Part {i}", "role": "worker", "instructions": "Mark the log."}
            for i in range(1, WORKERS + 1)
        ]
    }
    if explorer:
        plan["subtasks"].append({"title": "Survey", "role": "explorer", "instructions": "Look."})
    return Scenario.model_validate(
        {
            "name": "faults",
            "roles": {
                "planner": [{"tool_calls": [{"name": "submit_plan", "arguments": plan}]}],
                "worker": [
                    {"tool_calls": [{"name": "run", "arguments": {"command": first}}]},
                    {"tool_calls": [{"name": "run", "arguments": {"command": second}}]},
                    {"tool_calls": [{"name": "finish", "arguments": {"summary": "marked"}}]},
                ],
            },
        }
    )


def process_env(settings: Settings) -> dict[str, str]:
    """`settings_env` plus the model timeout (a hung call is given up in test time)."""
    timeout = str(settings.llm_timeout_seconds)
    return {**settings_env(settings), "SWITCHBOARD_LLM_TIMEOUT_SECONDS": timeout}


@dataclass
class WorkerProcess:
    """`switchboard worker` in its own process group, killed and restarted at will."""

    settings: Settings
    log: Path
    process: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)
    """Every worker process this run started (killed ones included)."""
    kills: int = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "entrypoints", "worker"],
                env=process_env(self.settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pids.append(self.process.pid)

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (its commands included)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.kills += 1

    def freeze(self) -> None:
        """SIGSTOP the worker's process group: it holds what it polled and answers nothing."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    async def restart(self, pause: float = 0.3) -> None:
        self.kill()
        await asyncio.sleep(pause)
        self.start()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGCONT)  # a frozen worker hears the SIGTERM
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


async def when(
    handle: WorkflowHandle[object, TaskResult],
    predicate: Callable[[TaskStatus], bool | Awaitable[bool]],
    *,
    timeout: float = 120,
    what: str,
) -> TaskStatus:
    """Poll the status query until `predicate` holds (it may be async)."""
    deadline = time.monotonic() + timeout
    last: TaskStatus | None = None
    while time.monotonic() < deadline:
        try:
            last = await status_of(handle)
        except Exception:  # the first workflow task may not have run yet
            last = None
        if last is not None:
            held = predicate(last)
            if not isinstance(held, bool):
                held = await held
            if held:
                return last
            if last.phase.is_final:
                raise AssertionError(f"task ended {last.phase} ({last.error}) before {what}")
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last status: {last}")


def worktree_marks(settings: Settings) -> list[Path]:
    """Marker files in the host's worktrees right now (a command has started)."""
    return list(settings.worktrees_dir.glob("**/notes/log_*.txt"))


@dataclass
class Expected:
    """What one task must have come to."""

    phase: Phase
    workers: int = WORKERS
    """How many workers' marks the merged branch must hold (when it completed)."""
    interrupted: frozenset[int] = frozenset()
    """Workers whose first command a kill cut short (rolled back, not run again)."""


@dataclass
class Report:
    """One scenario's tally, as the soak table counts it."""

    tasks: int = 0
    lost: int = 0
    """Tasks that did not reach their expected terminal phase."""
    duplicated: int = 0
    """Commands that ran more than once, decisions applied more than once."""
    false_reports: int = 0
    """A result reported better (or other) than it is: a wrong diff, a leftover."""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What a scenario observed that is no problem but worth a line in the table."""
    temporal_kills: int = 0
    """Times the scenario SIGKILLed its Temporal dev server."""
    api_kills: int = 0
    """Times the scenario SIGKILLed the API process."""

    def add(self, other: Report) -> None:
        self.tasks += other.tasks
        self.temporal_kills += other.temporal_kills
        self.api_kills += other.api_kills
        self.lost += other.lost
        self.duplicated += other.duplicated
        self.false_reports += other.false_reports
        self.problems += other.problems
        self.notes += other.notes


async def check_task(
    client: Client,
    settings: Settings,
    repo: Path,
    task_id: str,
    expected: Expected,
    *,
    timeout: float = 180,
) -> Report:
    """The end-of-run checks of one task; every problem is counted, none raised."""
    report = Report(tasks=1)
    handle = client.get_workflow_handle(task_id, result_type=TaskResult)
    try:
        result = await asyncio.wait_for(handle.result(), timeout)
        status = await status_of(handle)
    except WorkflowFailureError:  # a task that fails ends its workflow failed
        status = await status_of(handle)
        result = TaskResult(task_id=task_id, phase=status.phase, error=status.error)
    except Exception as exc:  # a lost task is a finding, not a crash
        report.lost += 1
        report.problems.append(f"{task_id}: no result ({type(exc).__name__}: {exc})")
        return report
    if result.phase is not expected.phase:
        report.lost += 1
        report.problems.append(
            f"{task_id}: ended {result.phase} ({result.error}), expected {expected.phase}"
        )
    if result.phase is Phase.COMPLETED:
        before = len(report.problems)
        _check_published(report, repo, task_id, expected)
        if len(report.problems) > before:
            states = [(s.index, s.state.value, s.error) for s in status.subagents]
            report.problems.append(f"{task_id}: subagents {states}")
        approvals = [a for a in status.approvals if a.decision == "approved"]
        if len(approvals) != 1:
            report.duplicated += 1
            report.problems.append(f"{task_id}: {len(approvals)} approvals applied")
    elif result.phase is Phase.FAILED and not result.error:
        report.false_reports += 1
        report.problems.append(f"{task_id}: failed without saying why")
    for left in await _leftovers(settings, task_id):
        report.false_reports += 1
        report.problems.append(f"{task_id}: left behind {left}")
    return report


def _check_published(report: Report, repo: Path, task_id: str, expected: Expected) -> None:
    branch = f"switchboard/{task_id}"
    try:
        files = git(repo, "ls-tree", "-r", "--name-only", branch).splitlines()
    except subprocess.CalledProcessError:
        report.false_reports += 1
        report.problems.append(f"{task_id}: completed but {branch} is not in the repository")
        return
    wanted = [f"notes/log_{i}.txt" for i in range(1, expected.workers + 1)]
    marks = sorted(f for f in files if f.startswith("notes/"))
    if marks != wanted:
        report.false_reports += 1
        report.problems.append(f"{task_id}: branch holds {marks}, expected {wanted}")
    for i in range(1, expected.workers + 1):
        name = f"notes/log_{i}.txt"
        if name not in files:
            continue
        lines = git(repo, "show", f"{branch}:{name}").splitlines()
        wanted_lines = marker_lines(i, interrupted=i in expected.interrupted)
        if lines != wanted_lines:
            repeated = len(lines) - len(set(lines))
            report.duplicated += max(repeated, 0)
            if repeated <= 0:
                report.false_reports += 1
            report.problems.append(f"{task_id}: {name} holds {lines}, expected {wanted_lines}")


async def _leftovers(settings: Settings, task_id: str, *, grace: float = 30) -> list[str]:
    """What the task left on the host, after `grace` seconds of cleanup time."""
    deadline = time.monotonic() + grace
    while True:
        found = [
            *(str(p) for p in settings.worktrees_dir.glob(f"*{task_id}*")),
            *(str(p) for p in settings.worktrees_dir.glob(f"*/*{task_id}*")),
            *(str(p) for p in settings.transcripts_dir.glob(f"*{task_id}*")),
            *(f"process {pid}" for pid in sandbox_processes(settings, task_id)),
        ]
        if not found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


def sandbox_processes(settings: Settings, needle: str) -> list[int]:
    """Live processes whose command line names both this host's data dir and `needle`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(settings.data_dir) in cmdline and needle in cmdline:
            found.append(int(proc.name))
    return found


def dead_worker_cgroups(pids: list[int], *, depth: int = 6) -> list[str]:
    """Command cgroups (named `...-p<pid>-<hex>`) of the given worker processes."""
    marks = [f"-p{pid}-" for pid in pids]
    found = []
    base = len(CGROUP_ROOT.parts)
    for here, dirs, _ in os.walk(CGROUP_ROOT):
        if len(Path(here).parts) - base >= depth:
            dirs.clear()
        found += [f"{here}/{d}" for d in dirs if any(m in d for m in marks)]
    return found


@dataclass
class ApiProcess:
    """`switchboard api` in its own process on a free port, SIGKILLed at will."""

    settings: Settings
    log: Path
    process: subprocess.Popen[bytes] | None = None
    kills: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "entrypoints", "api"],
                env=process_env(self.settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_port(self.settings.api_port, self.process, "the API", timeout=60)

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.kills += 1

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
