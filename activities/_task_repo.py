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

import contextlib
import hashlib
import os
import threading
import time
from pathlib import Path

import git

from activities._git_env import borrowed_objects
from activities._git_util import TASK_ID, fail, git_cmd, rmtree
from switchboard.settings import Settings
from switchboard.wire import Errors

BASE_REFS = "refs/switchboard-bases/"
ENDED = "switchboard-ended"
"""In a task repository: written when its task ended; its mtime starts the retention."""
PUBLISHED_DIR = "switchboard-published"
"""In the mirror: one empty file per (target branch, commit) Switchboard published."""


def task_repo_path(settings: Settings, task_id: str) -> Path:
    if not TASK_ID.match(task_id):
        raise fail(f"invalid task id {task_id!r}", Errors.INVALID_INPUT)
    return settings.task_repos_dir.resolve() / f"{task_id}.git"


def pin_base(mirror: Path, task_id: str, base_commit: str) -> None:
    """Keep the task's base commit in the mirror while the task lives (a gc of the mirror
    keeps what a ref names). Call under the mirror's lock, as its fetch prunes refs."""
    git_cmd(mirror).update_ref(BASE_REFS + task_id, base_commit)


def ensure_task_repo(settings: Settings, mirror: Path, task_id: str, origin: str) -> Path:
    """The task's repository (created on first use; idempotent).

    It writes only below its own path, so it needs no mirror lock (holding it here put
    every task of a burst in line behind each other's `git init`, bench B4); two
    attempts of the same task may race, and the second one takes the first one's.
    """
    path = task_repo_path(settings, task_id)
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
    try:
        tmp.rename(path)
    except OSError:
        rmtree(tmp)
        if not (path / "HEAD").is_file():
            raise
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


def mark_ended(settings: Settings, task_id: str) -> bool:
    """Record that the task ended (its retention starts now; idempotent: the first
    mark counts). Whether the task has a repository here."""
    path = task_repo_path(settings, task_id)
    if not (path / "HEAD").is_file():
        return False
    marker = path / ENDED
    if not marker.exists():
        marker.write_text(f"{time.time():.0f}\n")
    return True


def mark_orphans_ended(settings: Settings, live_task_ids: set[str], listed_at: float) -> list[str]:
    """Mark the repositories of tasks that no longer run (ended without their cleanup
    here: terminated, timed out, a worker lost); only those older than `listed_at`, the
    time the live tasks were listed, so a task started since is never taken for ended."""
    marked = []
    root = settings.task_repos_dir
    for repo in sorted(root.glob("*.git")) if root.is_dir() else []:
        task_id = repo.name.removesuffix(".git")
        if task_id in live_task_ids or (repo / ENDED).exists() or not TASK_ID.match(task_id):
            continue
        with contextlib.suppress(OSError):
            if (repo / "HEAD").stat().st_mtime < listed_at and mark_ended(settings, task_id):
                marked.append(task_id)
    return marked


def collect_ended(settings: Settings, retention_hours: float) -> list[str]:
    """Remove the repositories of tasks that ended more than `retention_hours` ago
    (and unpin their bases in the mirror); the task ids removed."""
    cutoff = time.time() - retention_hours * 3600
    removed = []
    root = settings.task_repos_dir
    for marker in sorted(root.glob(f"*.git/{ENDED}")) if root.is_dir() else []:
        task_id = marker.parent.name.removesuffix(".git")
        with contextlib.suppress(OSError):
            if TASK_ID.match(task_id) and marker.stat().st_mtime < cutoff:
                remove_task_repo(settings, task_id)
                removed.append(task_id)
    return removed
