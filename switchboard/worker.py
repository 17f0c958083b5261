"""The worker, assembled in one place: every workflow and every activity.

Two pollers share one process: the shared queue (workflows, repo preparation,
planning) and this host's own queue (everything that touches a worktree,
sandbox or transcript on this host's disk).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from switchboard.settings import Settings

if TYPE_CHECKING:
    from activities.sandbox import Sandbox

log = logging.getLogger(__name__)

# Pure modules imported once, not per workflow run: the difference between 1-2 ms and
# tens of ms per activation.
PASSTHROUGH_MODULES = ("switchboard", "pydantic", "pydantic_core", "annotated_types")


def workflow_runner() -> SandboxedWorkflowRunner:
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
    )


def build_workers(
    client: Client,
    settings: Settings,
    *,
    sandbox: Sandbox | None = None,
) -> list[Worker]:
    """Both workers of one process: the shared queue and this host's queue."""
    from activities.repo import RepoActivities
    from activities.tools import ToolActivities

    from activities.lifecycle import LifecycleActivities
    from activities.llm import LlmActivities
    from activities.sandbox import select_backend
    from workflows import ConversationWorkflow, DelegatedTaskWorkflow, SubagentWorkflow

    box = sandbox or select_backend(settings)
    repo = RepoActivities(settings)
    llm = LlmActivities(settings)
    tools = ToolActivities(settings, box)
    lifecycle = LifecycleActivities(repo, box)
    shared = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[DelegatedTaskWorkflow, SubagentWorkflow, ConversationWorkflow],
        activities=[repo.prepare_repo, llm.plan_subtasks],
        workflow_runner=workflow_runner(),
    )
    # Subagents run on the host that holds their worktree: their activities then share
    # the workflow's queue, so the server hands them over eagerly with the workflow
    # task's answer instead of through matching.
    host = Worker(
        client,
        task_queue=settings.host_queue,
        workflows=[SubagentWorkflow],
        workflow_runner=workflow_runner(),
        activities=[
            repo.create_worktree,
            repo.commit_worktree,
            repo.integrate_branches,
            repo.read_diff,
            tools.start_sandbox,
            tools.run_tools,
            llm.llm_turn,
            lifecycle.stop_sandbox,
            lifecycle.cleanup_task,
        ],
    )
    return [shared, host]


async def run_workers(workers: Sequence[Worker], stop: asyncio.Event) -> None:
    """Run until `stop` is set, then shut every worker down gracefully."""
    async with contextlib.AsyncExitStack() as stack:
        for worker in workers:
            await stack.enter_async_context(worker)
        await stop.wait()


async def serve(settings: Settings) -> None:
    from switchboard.temporal import connect, ensure_search_attributes

    client = await connect(settings)
    await ensure_search_attributes(client, settings.temporal_namespace)
    workers = build_workers(client, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "worker polling %s and %s on %s",
        settings.task_queue,
        settings.host_queue,
        settings.temporal_address,
    )
    await run_workers(workers, stop)


def run_worker(settings: Settings) -> None:
    """Blocking entry point of `switchboard worker`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(settings))
