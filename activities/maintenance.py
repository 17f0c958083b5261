"""Host maintenance activities: `git gc` in this host's mirrors (see workflows/maintenance.py),
after removing what ended tasks left past their retention (repositories, credentials).

A refused or abandoned task leaves unreachable objects in its repository's
mirror (hundreds of MiB when a subagent wrote large files); nothing else ever
removes them. `gc_mirrors` packs each mirror and prunes unreachable objects older
than `prune_hours` (younger ones may belong to a task still running), under the
same per-mirror lock as a fetch, with host git's hardened environment: the
mirrors are ours, but nothing in them is allowed to start a program.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
import time
from pathlib import Path

from temporalio import activity

from activities._heartbeat import heartbeating
from activities._task_repo import collect_ended
from activities._transcripts import collect_ended_marks
from switchboard.contracts import GcMirrorsInput, GcMirrorsResult
from switchboard.credentials import CredentialStore
from switchboard.settings import Settings
from switchboard.wire import Activities

GC_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_CONFIG_COUNT": "2",
    "GIT_CONFIG_KEY_0": "core.hooksPath",
    "GIT_CONFIG_VALUE_0": os.devnull,
    "GIT_CONFIG_KEY_1": "core.fsmonitor",
    "GIT_CONFIG_VALUE_1": "false",
}
GC_TIMEOUT_SECONDS = 1800


def directory_bytes(path: Path) -> int:
    """Apparent size of the regular files below `path`."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def gc_mirror(mirror: Path, prune_hours: int) -> str | None:
    """Collect one mirror; git's complaint when that failed, else None."""
    with open(mirror.with_suffix(".lock"), "a") as lock:  # the lock a fetch holds
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            done = subprocess.run(
                [
                    "git",
                    "--git-dir",
                    str(mirror),
                    "gc",
                    "--quiet",
                    f"--prune={prune_hours}.hours.ago",
                ],
                capture_output=True,
                text=True,
                env=GC_ENV,
                timeout=GC_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"git gc ran longer than {GC_TIMEOUT_SECONDS} s"
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return None if done.returncode == 0 else done.stderr.strip()[-400:] or "git gc failed"


def gc_mirrors(settings: Settings, input: GcMirrorsInput) -> GcMirrorsResult:
    """Collect every mirror of this host; one that fails is reported and skipped.

    First what ended tasks left past `task_retention_hours`: their repositories (which
    unpins their bases, so this gc may drop them), stored credentials no task holds, and
    the marks that keep a straggling step from writing the files of an ended task.
    """
    retention = settings.task_retention_hours
    # A task's ended-mark only has to outlive the steps that could outlive the task.
    collect_ended_marks(settings.transcripts_dir, time.time() - retention * 3600)
    result = GcMirrorsResult(
        task_repos_removed=len(collect_ended(settings, retention)),
        credentials_removed=len(CredentialStore(settings.credentials_dir).sweep(retention * 3600)),
    )
    mirrors_dir = settings.mirrors_dir
    if not mirrors_dir.is_dir():
        return result
    for mirror in sorted(p for p in mirrors_dir.glob("*.git") if p.is_dir()):
        result.bytes_before += directory_bytes(mirror)
        problem = gc_mirror(mirror, input.prune_hours)
        if problem is None:
            result.mirrors += 1
        else:
            result.failed.append(f"{mirror.name}: {problem}")
        result.bytes_after += directory_bytes(mirror)
    return result


class MaintenanceActivities:
    """Registered on each host's queue."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @activity.defn(name=Activities.GC_MIRRORS)
    async def gc_mirrors(self, input: GcMirrorsInput) -> GcMirrorsResult:
        """`git gc` in every mirror of this host (blocking work in a thread)."""
        return await heartbeating(asyncio.to_thread(gc_mirrors, self._settings, input))
