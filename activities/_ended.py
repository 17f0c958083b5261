"""Tasks that ended on this host, so that no worktree outlives its task's cleanup.

A cancel can end a subagent while its worktree checkout is still running on a
worker thread (the workflow does not wait for a cancelled activity), so the task's
cleanup may run before the checkout finishes. Cleanup therefore marks the task
ended *before* it removes anything, and a checkout checks the mark *after* it
finishes: one that finished earlier is removed by the cleanup, one that finishes
later sees the mark and removes itself. Marks are empty files under
`<data dir>/ended-tasks/`, pruned after a day (a checkout takes minutes at most).
"""

from __future__ import annotations

import time
from pathlib import Path

from activities._git_util import task_dir_of
from switchboard.settings import Settings

__all__ = ["KEEP_SECONDS", "ended", "mark_ended"]

KEEP_SECONDS = 24 * 3600
"""How long a mark is kept: far longer than any checkout runs."""

_DELETE_BRANCHES = "delete-branches"


def _marks(settings: Settings) -> Path:
    return settings.data_dir.resolve() / "ended-tasks"


def mark_ended(settings: Settings, task_id: str, *, delete_branches: bool) -> None:
    """Record that the task's cleanup has begun (and whether it deletes branches);
    prune marks older than `KEEP_SECONDS`."""
    task_dir_of(settings, task_id)  # refuses an invalid task id
    marks = _marks(settings)
    marks.mkdir(parents=True, exist_ok=True)
    (marks / task_id).write_text(_DELETE_BRANCHES if delete_branches else "", encoding="utf-8")
    old = time.time() - KEEP_SECONDS
    for mark in marks.iterdir():
        try:
            if mark.stat().st_mtime < old:
                mark.unlink()
        except FileNotFoundError:  # pruned by another cleanup at the same time
            continue


def ended(settings: Settings, task_id: str) -> bool | None:
    """None while the task has not been cleaned up here; else whether its cleanup
    deletes the task's branches."""
    try:
        text = (_marks(settings) / task_id).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return text == _DELETE_BRANCHES
