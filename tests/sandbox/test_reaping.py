"""Orphans of a dead worker are reaped at the next start; a running task keeps its own."""

from __future__ import annotations

import uuid

from temporalio.client import Client

from activities.sandbox import Sandbox
from switchboard.models import Role, TaskRequest
from switchboard.settings import Settings
from switchboard.wire import Workflows
from switchboard.worker import reap_orphans
from tests.sandbox.helpers import Checkout


async def test_sandboxes_of_ended_tasks_are_reaped_and_running_ones_kept(
    client: Client, sandbox: Sandbox, settings: Settings, checkout: Checkout
) -> None:
    # A task that is running (no worker polls its queue, so it stays so) ...
    running = await client.start_workflow(
        Workflows.TASK,
        TaskRequest(goal="still running", repo="/nonexistent"),
        id=checkout.task_id,
        task_queue=f"nobody-{uuid.uuid4()}",
    )
    # ... and one whose workflow is gone (the worker died, the task was terminated).
    orphan = Checkout(
        mirror=checkout.mirror,
        worktree=checkout.worktree,
        base_commit=checkout.base_commit,
        outside=checkout.outside,
    )
    await sandbox.start(checkout.spec(Role.EXPLORER))
    await sandbox.start(orphan.spec(Role.EXPLORER))
    try:
        reaped = await reap_orphans(client, settings, sandbox)
        left = await sandbox.task_ids()
        if sandbox.name == "docker":
            assert orphan.task_id in reaped
            assert orphan.task_id not in left
            assert checkout.task_id in left
        else:  # per-call sandboxes hold nothing between commands
            assert left == set()
            assert checkout.task_id not in reaped
    finally:
        await running.terminate()
        await sandbox.remove_task(orphan.task_id)
