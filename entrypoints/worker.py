"""The worker, assembled in one place: every workflow and every activity.

Three pollers: the shared queue (workflows, repo preparation, planning), this
host's own queue (everything that touches a worktree, sandbox or transcript on this
host's disk) and the chats' queue, in one process by default (`switchboard up`).
`--queues` splits them over two: `tasks` (the first two, at `task_worker_nice`, which
its sandboxed commands and git inherit) and `chat`, so a chat turn is not queued
behind task steps for the CPU or the GIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import signal
import sys
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import temporalio
from temporalio.client import Client
from temporalio.worker import Interceptor, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from switchboard import wire
from switchboard.settings import Settings

if TYPE_CHECKING:
    from temporalio.runtime import Runtime

    from activities.sandbox import Sandbox

log = logging.getLogger(__name__)

# Pure modules imported once, not per workflow run: the difference between 1-2 ms and
# tens of ms per activation.
PASSTHROUGH_MODULES = ("switchboard", "pydantic", "pydantic_core", "annotated_types")
HEARTBEAT_THROTTLE = timedelta(seconds=1)
"""At most one heartbeat per second per activity reaches the server (host worker)."""
BLOCKING_THREADS = 64
"""Threads for the activities' blocking work (`asyncio.to_thread`: git, the Docker API,
transcript and journal files). asyncio's default pool has cores + 4 threads, 6 on two
cores: a burst of tasks (bench B4) filled them with `prepare_repo` calls waiting on
their mirror's lock and with confined git, and every step's 2 ms transcript write queued
behind them. The threads mostly wait on subprocesses and sockets, so more cost little."""


class Queues(StrEnum):
    """Which pollers a worker process runs."""

    ALL = "all"
    TASKS = "tasks"
    """The shared queue and this host's: every task, at `task_worker_nice`."""
    CHAT = "chat"
    """The chats' queue only: no sandbox, no worktree, no metrics endpoint."""


_POOLED: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
CODE_PACKAGES = ("switchboard", "workflows", "activities", "entrypoints")
"""The packages whose source makes up a worker's build id."""


@functools.cache
def build_id() -> str:
    """This worker's code version as Temporal records it: our source and the SDK's version.

    Without one the SDK hashes the bytecode of every loaded module (~1,700) when the
    first worker is built, compiling each of ours again when no .pyc is cached: about
    0.5 s of CPU on every start, before polling. Reading our ~100 source files is a
    few milliseconds, and the id still changes whenever the worker's code does.
    """
    digest = hashlib.sha256(f"temporalio {temporalio.__version__} {sys.version}".encode())
    for package in CODE_PACKAGES:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.origin is not None, package
        root = Path(spec.origin).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(f"{package}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


def workflow_runner() -> SandboxedWorkflowRunner:
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
    )


def build_workers(
    client: Client,
    settings: Settings,
    *,
    sandbox: Sandbox | None = None,
    queues: Queues = Queues.ALL,
) -> list[Worker]:
    """The workers of one process: the shared queue, this host's queue and the chats'
    (`queues` picks the tasks' two, the chats' or all three).

    Long because: imports are deferred (the CLI loads no activity code) and the
    three workers' queues, workflows and activities read best side by side.
    """
    from activities.lifecycle import LifecycleActivities
    from activities.llm import LlmActivities
    from activities.maintenance import MaintenanceActivities
    from activities.repo import RepoActivities
    from activities.sandbox import select_backend
    from activities.step import StepActivities
    from activities.tools import ToolActivities
    from switchboard.conversation import conversation_queue
    from workflows import (
        ConversationWorkflow,
        DelegatedTaskWorkflow,
        MirrorMaintenanceWorkflow,
        SubagentWorkflow,
    )

    sticky = timedelta(seconds=settings.worker_sticky_timeout_seconds)
    # Chats on their own queue and pollers: a chat turn never waits behind task work.
    chat = Worker(
        client,
        task_queue=conversation_queue(settings.task_queue),
        workflows=[ConversationWorkflow],
        workflow_runner=workflow_runner(),
        build_id=build_id(),
        sticky_queue_schedule_to_start_timeout=sticky,
    )
    if queues is Queues.CHAT:
        return [chat]
    box = sandbox or select_backend(settings)
    repo = RepoActivities(settings)
    llm = LlmActivities(settings)
    tools = ToolActivities(settings, box)
    lifecycle = LifecycleActivities(repo, box)
    step = StepActivities(llm, tools)
    shared = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[DelegatedTaskWorkflow, SubagentWorkflow, MirrorMaintenanceWorkflow],
        activities=[repo.prepare_repo, llm.plan_subtasks],
        workflow_runner=workflow_runner(),
        build_id=build_id(),
        max_cached_workflows=settings.worker_max_cached_workflows,
        sticky_queue_schedule_to_start_timeout=sticky,
        interceptors=claim_checks(settings),
    )
    # Subagents run on the host that holds their worktree: their activities then share
    # the workflow's queue, so the server hands them over eagerly with the workflow
    # task's answer instead of through matching.
    host = Worker(
        client,
        task_queue=settings.host_queue,
        workflows=[SubagentWorkflow],
        workflow_runner=workflow_runner(),
        build_id=build_id(),
        sticky_queue_schedule_to_start_timeout=sticky,
        # A cancel reaches a running step only in the answer to a heartbeat, and a
        # cancelled subagent waits for its step: send each heartbeat the step makes
        # (every 2.5 s), not one per 4 s (the SDK's default, 80 % of the timeout).
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        activities=[
            repo.create_worktree,
            repo.integrate_branches,
            repo.check_target,
            step.subagent_step,
            lifecycle.finish_subagent,
            lifecycle.cleanup_task,
            MaintenanceActivities(settings).gc_mirrors,
        ],
    )
    return [shared, host] if queues is Queues.TASKS else [shared, host, chat]


def claim_checks(settings: Settings) -> list[Interceptor]:
    """With a claim key, the task workflows' updates must carry signed claims."""
    from workflows.claim_check import ClaimCheck

    if settings.claim_key is None:
        return []
    return [ClaimCheck(settings.claim_key.get_secret_value().encode())]


def use_blocking_pool() -> None:
    """Give the running loop `BLOCKING_THREADS` threads for blocking work (once per loop)."""
    loop = asyncio.get_running_loop()
    if loop not in _POOLED:
        pool = ThreadPoolExecutor(BLOCKING_THREADS, thread_name_prefix="blocking")
        loop.set_default_executor(pool)
        _POOLED.add(loop)


async def run_workers(workers: Sequence[Worker], stop: asyncio.Event) -> None:
    """Run until `stop` is set, then shut every worker down gracefully."""
    use_blocking_pool()
    async with contextlib.AsyncExitStack() as stack:
        for worker in workers:
            await stack.enter_async_context(worker)
        await stop.wait()


async def reap_orphans(client: Client, settings: Settings, sandbox: Sandbox) -> list[str]:
    """Remove sandboxes and worktrees left on this host by tasks that no longer run.

    A worker killed mid-task leaves them behind; the task itself, if still running,
    keeps its own (its next activity reuses them), so only ended tasks are reaped.
    """
    from activities.lifecycle import reap_orphan_transcripts
    from activities.repo import mark_orphan_task_repos
    from activities.repo import reap_orphan_worktrees as reap_worktrees

    listed_at = time.time()
    running = client.list_workflows(
        f"WorkflowType = '{wire.Workflows.TASK}' AND ExecutionStatus = 'Running'"
    )
    live = {execution.id async for execution in running}
    left = await sandbox.reap_dead_workers()
    if left:
        log.info("removed %d sandboxed commands that dead workers left running", left)
    reaped = set()
    for task_id in await sandbox.task_ids() - live:
        await sandbox.remove_task(task_id)
        reaped.add(task_id)
    reaped.update(await asyncio.to_thread(reap_worktrees, settings, live))
    reaped.update(await asyncio.to_thread(reap_orphan_transcripts, settings, live))
    # Kept for `task_retention_hours` from now, then the maintenance schedule removes them.
    await asyncio.to_thread(mark_orphan_task_repos, settings, live, listed_at)
    return sorted(reaped)


WORKER_CODE = (
    "activities.lifecycle",
    "activities.llm",
    "activities.maintenance",
    "activities.repo",
    "activities.step",
    "activities.tools",
    "switchboard.conversation",
    "workflows",
)
"""The modules `build_workers` and the reaper import: most of a worker's start (CPU)."""


def load_worker_code() -> None:
    for name in WORKER_CODE:
        importlib.import_module(name)


async def start(settings: Settings, runtime: Runtime | None) -> tuple[Client, Sandbox]:
    """Connect, register what the worker needs on the server, and pick the sandbox.

    The imports run in a thread meanwhile: they hold the GIL for most of it, but the
    client's round trips (done in the SDK's own threads) and the sandbox's smoke run
    (a subprocess) wait without it, so the waits no longer add to the imports.
    """
    from activities.sandbox import select_backend
    from switchboard.temporal import (
        connect,
        ensure_mirror_gc_schedule,
        ensure_search_attributes,
    )

    loading = asyncio.ensure_future(asyncio.to_thread(load_worker_code))
    try:
        client = await connect(settings, runtime=runtime)
        sandbox, _, _ = await asyncio.gather(
            asyncio.to_thread(select_backend, settings),
            ensure_search_attributes(client, settings.temporal_namespace),
            ensure_mirror_gc_schedule(client, settings),
        )
    finally:
        await loading
    return client, sandbox


async def serve(settings: Settings, queues: Queues = Queues.ALL) -> None:
    from switchboard.recovery import reclaim_host

    runtime = None
    # One metrics endpoint per host: the tasks' worker (or the only one) serves it.
    if settings.worker_metrics_port and queues is not Queues.CHAT:
        from switchboard.metrics import prometheus_runtime

        try:
            runtime = prometheus_runtime(settings.worker_metrics_port)
        except ValueError as exc:
            raise SystemExit(
                f"cannot serve worker metrics on 127.0.0.1:{settings.worker_metrics_port} "
                f"({exc}); set SWITCHBOARD_WORKER_METRICS_PORT to a free port, or 0 for none"
            ) from exc
    use_blocking_pool()
    if queues is Queues.CHAT:
        from switchboard.temporal import connect

        client = await connect(settings, runtime=runtime)
        workers = build_workers(client, settings, queues=queues)
    else:
        client, sandbox = await start(settings, runtime)
        reaped = await reap_orphans(client, settings, sandbox)
        if reaped:
            log.info("reaped what %d ended tasks left on this host: %s", len(reaped), reaped)
        workers = build_workers(client, settings, sandbox=sandbox, queues=queues)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "worker polling %s on %s",
        ", ".join(str(w.task_queue) for w in workers),
        settings.temporal_address,
    )
    if queues is Queues.CHAT:
        await run_workers(workers, stop)
        return
    # Alongside polling: the predecessor's attempts are retried as soon as they are failed.
    reclaim = asyncio.create_task(reclaim_host(client, settings))
    await run_workers(workers, stop)
    if not reclaim.done():
        reclaim.cancel()


def lower_priority(settings: Settings, queues: Queues) -> int:
    """Make a tasks-only worker `task_worker_nice` nicer; returns the niceness now.

    Called before any thread starts: Linux keeps a niceness per thread, and each new
    thread and child process (sandboxed commands, git) inherits its creator's.
    """
    if queues is Queues.TASKS and settings.task_worker_nice:
        return os.nice(settings.task_worker_nice)
    return os.nice(0)


def run_worker(settings: Settings, queues: Queues = Queues.ALL) -> None:
    """Blocking entry point of `switchboard worker`."""
    nice = lower_priority(settings, queues)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log.info("worker for %s queues at niceness %d", queues, nice)
    asyncio.run(serve(settings, queues))
