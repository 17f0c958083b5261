"""Mirror garbage collection: a Temporal Schedule per host runs `git gc` in its mirrors.

Against the dev server and real git: the schedule is created once however many
workers start, and a triggered run (through the worker's own registration) prunes
old unreachable objects from a mirror while keeping young ones and every ref.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

from temporalio.client import Client, ScheduleActionStartWorkflow

from switchboard import wire
from switchboard.contracts import GcMirrorsInput, GcMirrorsResult
from switchboard.settings import Settings
from switchboard.temporal import ensure_mirror_gc_schedule
from testkit import make_repo


def git(cwd: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, input=stdin, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def loose_object(mirror: Path, content: bytes, age_hours: float) -> Path:
    """An unreachable blob in the mirror, last modified `age_hours` ago."""
    done = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"], cwd=mirror, input=content, capture_output=True
    )
    sha = done.stdout.decode().strip()
    path = mirror / "objects" / sha[:2] / sha[2:]
    then = time.time() - age_hours * 3600
    os.utime(path, (then, then))
    return path


def mirror_with_garbage(settings: Settings, tmp_path: Path) -> tuple[Path, Path, Path, str]:
    source = make_repo(tmp_path / "source")
    settings.mirrors_dir.mkdir(parents=True)
    mirror = settings.mirrors_dir / "0123456789abcdef.git"
    git(tmp_path, "clone", "-q", "--bare", str(source), str(mirror))
    head = git(mirror, "rev-parse", "HEAD")
    old = loose_object(mirror, os.urandom(256 * 1024), age_hours=48)  # incompressible
    young = loose_object(mirror, b"written by a running task\n", age_hours=0.1)
    return mirror, old, young, head


async def test_the_schedule_is_created_once(client: Client, settings: Settings) -> None:
    assert await ensure_mirror_gc_schedule(client, settings) is True
    try:
        assert await ensure_mirror_gc_schedule(client, settings) is False  # a second worker
        handle = client.get_schedule_handle(wire.mirror_gc_schedule_id(settings.host_id))
        described = await handle.describe()
        action = described.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert action.workflow == wire.Workflows.MIRROR_MAINTENANCE
        assert action.task_queue == settings.task_queue
        [interval] = described.schedule.spec.intervals
        assert interval.every.total_seconds() == settings.mirror_gc_interval_hours * 3600
    finally:
        await client.get_schedule_handle(wire.mirror_gc_schedule_id(settings.host_id)).delete()


async def test_a_triggered_run_prunes_old_garbage_only(
    client: Client, settings: Settings, worker: None, tmp_path: Path
) -> None:
    mirror, old, young, head = mirror_with_garbage(settings, tmp_path)
    await ensure_mirror_gc_schedule(client, settings)
    handle = client.get_schedule_handle(wire.mirror_gc_schedule_id(settings.host_id))
    try:
        await handle.trigger()
        for _ in range(300):
            if not old.exists():
                break
            await asyncio.sleep(0.1)
        assert not old.exists(), "the scheduled gc did not prune the old unreachable object"
        assert git(mirror, "rev-parse", "HEAD") == head
        assert git(mirror, "cat-file", "-t", young.parent.name + young.name) == "blob"
        git(mirror, "fsck", "--no-dangling")
    finally:
        await handle.delete()


async def test_the_workflow_reports_what_it_did(
    client: Client, settings: Settings, worker: None, tmp_path: Path
) -> None:
    _, old, _, _ = mirror_with_garbage(settings, tmp_path)
    broken = settings.mirrors_dir / "fedcba9876543210.git"
    broken.mkdir()  # not a repository: reported, and the others are still collected
    result = await client.execute_workflow(
        wire.Workflows.MIRROR_MAINTENANCE,
        GcMirrorsInput(host_queue=settings.host_queue, prune_hours=24),
        id=f"gc-{settings.host_id}",
        task_queue=settings.task_queue,
        result_type=GcMirrorsResult,
    )
    assert result.mirrors == 1 and not old.exists()
    assert len(result.failed) == 1 and result.failed[0].startswith("fedcba9876543210.git: ")
    assert result.bytes_after < result.bytes_before
