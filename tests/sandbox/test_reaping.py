"""Orphans of a dead worker are reaped at the next start; a running task keeps its own."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from activities.sandbox import Sandbox
from entrypoints.worker import reap_orphans
from switchboard.models import Role, TaskRequest
from switchboard.settings import Settings
from switchboard.wire import Workflows
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
    for task_id in (checkout.task_id, orphan.task_id):  # transcripts of both
        (settings.transcripts_dir / task_id / "1").mkdir(parents=True)
        (settings.transcripts_dir / task_id / "1" / "r1.json").write_text("[]")
    try:
        reaped = await reap_orphans(client, settings, sandbox)
        left = await sandbox.task_ids()
        assert orphan.task_id in reaped
        assert not (settings.transcripts_dir / orphan.task_id).exists()
        assert (settings.transcripts_dir / checkout.task_id / "1" / "r1.json").exists()
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


_DYING_WORKER = """
import asyncio, sys
from activities.sandbox._bwrap import BwrapSandbox
from switchboard.contracts import SandboxSpec
from switchboard.settings import Settings

spec = SandboxSpec.model_validate_json(sys.argv[1])
box = BwrapSandbox(Settings())
asyncio.run(box.exec(spec, ["sleep", "600"], timeout=600, output_limit=1024))
"""


async def test_a_dead_workers_bwrap_commands_are_reaped_at_the_next_start(
    settings: Settings, checkout: Checkout, tmp_path: Path
) -> None:
    """SIGKILL a worker mid-command: its bwrap and cgroup stay until the next start."""
    from activities.sandbox._bwrap import BwrapSandbox
    from entrypoints.stack import settings_env

    box = BwrapSandbox(settings)
    box.check()
    cgroups = box._cgroups
    if cgroups is None:
        pytest.skip("no writable cgroups here: bwrap commands end with their process group")
    spec = checkout.spec(Role.WORKER)
    worker = subprocess.Popen(
        [sys.executable, "-c", _DYING_WORKER, spec.model_dump_json()],
        env=settings_env(settings),
        start_new_session=True,
    )
    marker = f"-p{worker.pid}-"
    try:
        left: list[Path] = []
        for _ in range(200):
            left = [
                d
                for parent in cgroups.parents.values()
                for d in parent.iterdir()
                if marker in d.name and (d / "cgroup.procs").read_text().split()
            ]
            if left:
                break
            time.sleep(0.05)
        assert left, "the command never started"
        held = {int(p) for d in left for p in (d / "cgroup.procs").read_text().split()}
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    # Its cgroups stay (the worker never removed them) and, depending on when bwrap
    # notices its parent is gone, so may the command: both are the next start's job.
    assert all(d.exists() for d in left)

    # A command of a live worker (this process) is left alone.
    mine = asyncio.create_task(
        box.exec(checkout.spec(Role.EXPLORER), ["sleep", "1"], timeout=10, output_limit=64)
    )
    ours = f"-p{os.getpid()}-"
    for _ in range(100):
        if any(ours in d.name for p in cgroups.parents.values() for d in p.iterdir()):
            break
        await asyncio.sleep(0.02)

    assert await BwrapSandbox(settings).reap_dead_workers() >= 1
    assert not any(_alive(pid) for pid in held)
    assert not any(d.exists() for d in left)
    result = await mine
    assert result.ok and result.limit is None, result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1]
    return state != "Z"
