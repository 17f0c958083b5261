"""Repository activities: mirror, worktrees, commits, merges, diffs, cleanup.

Each activity runs the synchronous git functions of `activities._git` in a thread
and heartbeats while they run (a fetch or a checkout can take minutes). They all
touch files of one host, so workflows send them to `PreparedRepo.host_queue`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import _git, _target
from activities._heartbeat import heartbeating
from activities._task_repo import mark_orphans_ended
from activities._transcripts import task_ended
from switchboard.contracts import (
    CleanupInput,
    CommitInput,
    CommitResult,
    IntegrateInput,
    MergeOutcome,
    PreparedRepo,
    PrepareRepoInput,
    TargetInput,
    WorktreeInfo,
    WorktreeInput,
)
from switchboard.credentials import CredentialStore
from switchboard.models import TargetCheck
from switchboard.settings import Settings
from switchboard.wire import Activities, Errors

__all__ = ["RepoActivities", "reap_orphan_worktrees"]

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - an activity input


class RepoActivities:
    """Git side effects of a task, bound to one host's settings (its data directory)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @property
    def settings(self) -> Settings:
        return self._settings

    @activity.defn(name=Activities.PREPARE_REPO)
    async def prepare_repo(self, input: PrepareRepoInput) -> PreparedRepo:
        """Fetch the repository into its cached mirror and resolve the base commit."""
        return await self._run(_git.prepare_mirror, input)

    @activity.defn(name=Activities.CREATE_WORKTREE)
    async def create_worktree(self, input: WorktreeInput) -> WorktreeInfo:
        """Check out a subagent's branch in its own worktree (idempotent). A checkout
        that finishes after its task's cleanup began removes itself and fails
        (the ended-mark `cleanup_task` writes first, see `activities._transcripts`); a
        cancel or a failure waits for the checkout to end, then checks too."""
        self._refuse_ended(input)
        work = asyncio.ensure_future(asyncio.to_thread(_git.create_worktree, self._settings, input))
        try:
            info = await heartbeating(asyncio.shield(work))
        except BaseException:  # cancelled, or the checkout failed (its dir removed under it)
            with contextlib.suppress(Exception):
                await work
            with contextlib.suppress(ApplicationError):
                await asyncio.to_thread(self._refuse_ended, input)
            raise
        await asyncio.to_thread(self._refuse_ended, input)
        return info

    def _refuse_ended(self, input: WorktreeInput) -> None:
        """Raise (after removing the task's worktrees here) if the task has ended.
        Branches and the task's repository are the cleanup's to keep or delete."""
        if not task_ended(self._settings.transcripts_dir, input.task_id):
            return
        _git.remove_task_worktrees(self._settings, input.task_id, input.mirror_path)
        raise ApplicationError(
            f"{input.task_id} has ended on this host: no worktree is created for it",
            type=Errors.WRONG_PHASE,
            non_retryable=True,
        )

    async def commit_worktree(self, input: CommitInput) -> CommitResult:
        """Commit what a subagent changed; report the diff stat (part of `finish_subagent`)."""
        return await self._run(_git.commit_worktree, input)

    @activity.defn(name=Activities.INTEGRATE_BRANCHES)
    async def integrate_branches(self, input: IntegrateInput) -> MergeOutcome:
        """Merge the subagent branches (conflicts reported, never resolved); maybe publish."""
        return await self._run(_git.integrate_branches, input)

    @activity.defn(name=Activities.CHECK_TARGET)
    async def check_target(self, input: TargetInput) -> TargetCheck:
        """How the change stands against its target branch's current tip."""
        return await self._run(_target.check_target, input)

    async def cleanup_worktrees(self, input: CleanupInput) -> None:
        """Remove a task's worktrees (and, if asked, branches); part of the cleanup activity."""
        await asyncio.to_thread(
            _git.remove_task_worktrees,
            self._settings,
            input.task_id,
            input.mirror_path,
            input.delete_branches,
        )

    async def _run(self, fn: Callable[[Settings, I], T], input: I) -> T:
        return await heartbeating(asyncio.to_thread(fn, self._settings, input))


def reap_orphan_worktrees(settings: Settings, live_task_ids: set[str]) -> list[str]:
    """Remove this host's worktrees of tasks that no longer run (worker start-up);
    returns the task ids reaped."""
    return _git.reap_orphans(settings, live_task_ids)


def mark_orphan_task_repos(
    settings: Settings, live_task_ids: set[str], listed_at: float
) -> list[str]:
    """Start the retention of the repositories of tasks that ended without their cleanup
    on this host (worker start-up), and release the credentials they held; returns the
    task ids marked."""
    CredentialStore(settings.credentials_dir).release_orphans(live_task_ids, listed_at)
    return mark_orphans_ended(settings, live_task_ids, listed_at)
