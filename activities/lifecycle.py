"""Endings: stop a subagent's sandbox, and remove everything a task left on a host."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._heartbeat import heartbeating
from activities._task_repo import mark_ended
from activities._transcripts import (
    TranscriptIdError,
    mark_task_ended,
    reap_task_files,
    remove_task_files,
)
from activities.repo import RepoActivities
from activities.sandbox import Sandbox
from switchboard.contracts import (
    CleanupInput,
    FinishSubagentInput,
    FinishSubagentResult,
)
from switchboard.credentials import CredentialStore
from switchboard.settings import Settings
from switchboard.wire import Activities, Errors


class LifecycleActivities:
    """Cleanup that spans the git and sandbox rooms, so neither owns the other."""

    def __init__(self, repo: RepoActivities, sandbox: Sandbox) -> None:
        self._repo = repo
        self._sandbox = sandbox

    @activity.defn(name=Activities.FINISH_SUBAGENT)
    async def finish_subagent(self, input: FinishSubagentInput) -> FinishSubagentResult:
        """Stop the sandbox, then commit (a worker's) work: one round trip, not two.

        Stopped first, so nothing left running in the sandbox can change the worktree
        while the host reads it. Both halves are idempotent, so a retry after a crash
        between them is harmless.
        """
        done = FinishSubagentResult()
        # A task parked at the approval gate keeps no sandbox.
        await heartbeating(self._sandbox.stop(input.sandbox_id))
        if input.commit is not None:
            done.commit = await self._repo.commit_worktree(input.commit)
        return done

    @activity.defn(name=Activities.CLEANUP_TASK)
    async def cleanup_task(self, input: CleanupInput) -> None:
        """Idempotent: the task is marked ended on this host first (a step that outlived
        its workflow then writes no transcript or journal again, see `_transcripts`),
        then sandboxes (they hold the worktrees open), worktrees, and the task's
        transcripts, step journals and recorded planner replies. The task's repository,
        when kept (completed, failed), is marked ended: the maintenance schedule removes
        it after `task_retention_hours`. The credentials the task held on this host are
        deleted unless another task holds them."""
        root = self._repo.settings.transcripts_dir
        try:
            await asyncio.to_thread(mark_task_ended, root, input.task_id)
        except TranscriptIdError as exc:
            raise ApplicationError(str(exc), type=Errors.INVALID_INPUT, non_retryable=True) from exc
        await self._sandbox.remove_task(input.task_id)
        await self._repo.cleanup_worktrees(input)
        settings = self._repo.settings
        if not input.delete_branches:
            await asyncio.to_thread(mark_ended, settings, input.task_id)
        store = CredentialStore(settings.credentials_dir)
        await asyncio.to_thread(store.release, input.task_id)
        await asyncio.to_thread(remove_task_files, root, input.task_id)


def reap_orphan_transcripts(settings: Settings, live_task_ids: set[str]) -> list[str]:
    """Remove this host's transcripts of tasks that no longer run (worker start-up:
    a task whose cleanup never ran here, a planner record on another host); returns
    the task ids reaped."""
    return reap_task_files(settings.transcripts_dir, live_task_ids)
