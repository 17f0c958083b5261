"""A lost or dirty worktree is rebuilt from its branch (issue #12 item 4), on real git."""

from __future__ import annotations

import shutil
from pathlib import Path

from activities import _git
from switchboard import wire
from switchboard.contracts import CommitInput, PrepareRepoInput, WorktreeInput
from switchboard.settings import Settings
from tests.unit.test_repo import TASK, git, settings, source

__all__ = ["settings", "source"]


def _worktree_input(mirror: str, base: str, *, fresh: bool = False) -> WorktreeInput:
    return WorktreeInput(
        task_id=TASK,
        index=1,
        mirror_path=mirror,
        base_commit=base,
        branch=wire.subagent_branch(TASK, 1),
        fresh=fresh,
    )


def test_a_lost_worktree_comes_back_with_the_branch_and_fresh_drops_uncommitted_work(
    settings: Settings, source: Path
) -> None:
    prepared = _git.prepare_mirror(settings, PrepareRepoInput(repo=str(source), task_id=TASK))
    first = _worktree_input(prepared.mirror_path, prepared.base_commit)
    path = Path(_git.create_worktree(settings, first).path)
    (path / "committed.txt").write_text("kept\n")
    done = _git.commit_worktree(
        settings,
        CommitInput(worktree_path=str(path), base_commit=prepared.base_commit, message="work"),
    )
    assert done.head is not None

    shutil.rmtree(path)  # the host lost the directory
    again = _git.create_worktree(settings, first)
    assert again.head == done.head
    assert (path / "committed.txt").read_text() == "kept\n"

    (path / "uncommitted.txt").write_text("a failed run's leftover\n")
    (path / "committed.txt").write_text("changed, never committed\n")
    assert _git.create_worktree(settings, first).head == done.head  # reused as it is
    assert (path / "uncommitted.txt").exists()

    fresh = _git.create_worktree(
        settings, _worktree_input(prepared.mirror_path, prepared.base_commit, fresh=True)
    )
    assert fresh.head == done.head
    assert not (path / "uncommitted.txt").exists()
    assert (path / "committed.txt").read_text() == "kept\n"
    assert git(path, "status", "--porcelain") == ""
