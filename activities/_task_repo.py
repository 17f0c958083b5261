"""One repository per task, borrowing the mirror's upstream objects (issue #10).

A task's branches, worktrees, merges and checkpoints live in its own bare
repository, `<data>/task-repos/<task_id>.git`, whose `objects/info/alternates`
names the mirror's object store: creating one copies nothing. The mirror itself
holds only what was fetched from upstream (plus a `refs/switchboard-bases/<task>`
ref per live task, so a gc of the mirror never drops a base a task still needs).
A sandbox mounts its task's repository and the mirror's `objects/` directory,
both read-only, so another task's refs and objects are not in its filesystem.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import git

from activities._git_env import borrowed_objects
from activities._git_util import TASK_ID, fail, git_cmd, rmtree
from switchboard.settings import Settings
from switchboard.wire import Errors

BASE_REFS = "refs/switchboard-bases/"
PUBLISHED_DIR = "switchboard-published"
"""In the mirror: one empty file per (target branch, commit) Switchboard published."""


def task_repo_path(settings: Settings, task_id: str) -> Path:
    if not TASK_ID.match(task_id):
        raise fail(f"invalid task id {task_id!r}", Errors.INVALID_INPUT)
    return settings.task_repos_dir.resolve() / f"{task_id}.git"


def ensure_task_repo(
    settings: Settings, mirror: Path, task_id: str, origin: str, base_commit: str
) -> Path:
    """The task's repository (created on first use; idempotent). Call under the mirror's lock.

    The base commit is pinned in the mirror so its gc keeps it while the task lives.
    """
    path = task_repo_path(settings, task_id)
    git_cmd(mirror).update_ref(BASE_REFS + task_id, base_commit)
    if (path / "HEAD").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the final path and renamed in, so a crash never leaves half of one.
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    rmtree(tmp)
    repo = git.Repo.init(tmp, bare=True)
    with repo.config_writer() as config:
        config.set_value('remote "origin"', "url", origin)  # redacted: no credentials
    repo.close()
    (tmp / "objects" / "info" / "alternates").write_text(f"{mirror.resolve() / 'objects'}\n")
    tmp.rename(path)
    return path


def mirror_of(settings: Settings, repo: Path) -> Path | None:
    """The mirror a task repository borrows from, if it is one of this host's mirrors."""
    mirrors = settings.mirrors_dir.resolve()
    for objects in borrowed_objects(repo):
        mirror = objects.parent
        if mirror.parent == mirrors and (mirror / "HEAD").is_file():
            return mirror
    return None


def is_repository_of(settings: Settings, repo: Path) -> bool:
    """Whether `repo` is a mirror or a task repository of this host."""
    resolved = repo.resolve()
    return any(
        resolved.is_relative_to(root.resolve())
        for root in (settings.mirrors_dir, settings.task_repos_dir)
    )


def admin_dir_candidates(settings: Settings) -> list[Path]:
    """Every worktree admin directory of this host's repositories (mirrors: older tasks)."""
    found: list[Path] = []
    for root in (settings.task_repos_dir, settings.mirrors_dir):
        found.extend(p.parent for p in root.resolve().glob("*.git/worktrees/*/gitdir"))
    return found


def remove_task_repo(settings: Settings, task_id: str) -> None:
    """Delete a task's repository and unpin its base in the mirror (rejected/cancelled)."""
    path = task_repo_path(settings, task_id)
    if not path.is_dir():
        return
    mirror = mirror_of(settings, path)
    if mirror is not None:
        git_cmd(mirror).update_ref("-d", BASE_REFS + task_id, with_exceptions=False)
    rmtree(path)


def published_marker(repo: Path, settings: Settings, target_branch: str, commit: str) -> Path:
    """Where the record that Switchboard published `commit` as `target_branch` lives.

    In the mirror (shared by the repository's tasks, never mounted in a sandbox)
    when `repo` is a task repository, so a later task may update what an earlier
    one published; in `repo` itself otherwise.
    """
    home = mirror_of(settings, repo) or repo
    key = hashlib.sha256(target_branch.encode()).hexdigest()[:24]
    return home / PUBLISHED_DIR / key / commit
