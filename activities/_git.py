"""Git plumbing for the repository activities: mirrors, worktrees, commits, merges, diffs.

Plain synchronous functions on GitPython, so tests and benchmarks call them without
Temporal. Each runs a handful of `git` subprocesses (a few ms each); the costly ones
are a fetch (network) and `git worktree add` (a full checkout).

Bad input raises `ApplicationError(non_retryable=True)` with a `wire.Errors` type;
a failed fetch or push raises a retryable one carrying git's own words.

Trust: a worktree is writable by its sandbox, so its `.git` file is never trusted.
Commits run with `--git-dir` pointing at the worktree's admin directory inside the
task's repository (which sandboxes only see read-only), found and checked on the
host side. Each task has its own repository (`activities._task_repo`).
"""

from __future__ import annotations

import os
from pathlib import Path

import git

from activities._excludes import default_excludes_file
from activities._git_env import (
    SUBAGENT_EMAIL,
    SUBAGENT_NAME,
    GitFailed,
    WorktreeGit,
)
from activities._git_util import (
    SHA,
    STDERR_TAIL_CHARS,
    TASK_ID,
    add_worktree,
    discard_worktree,
    existing_mirror,
    fail,
    git_cmd,
    has_ref,
    list_worktrees,
    rmtree,
    stderr_of,
    task_dir_of,
)
from activities._merge import (
    INTEGRATION_DIR,
    diff_stat,
    integrate_branches,
    parse_numstat,
)
from activities._mirror import mirror_path_for, prepare_mirror
from activities._task_repo import admin_dir_candidates, is_repository_of, remove_task_repo
from activities.sandbox import WorktreeLimits, check_worktree_bounds
from switchboard.contracts import CommitInput, CommitResult, WorktreeInfo, WorktreeInput
from switchboard.repo_refs import is_remote, validate_repo_reference
from switchboard.settings import Settings
from switchboard.wire import BRANCH_PREFIX, Errors

__all__ = [
    "INTEGRATION_DIR",
    "SUBAGENT_EMAIL",
    "SUBAGENT_NAME",
    "commit_worktree",
    "create_worktree",
    "diff_stat",
    "integrate_branches",
    "is_remote",
    "mirror_path_for",
    "neutralise_nested",
    "prepare_mirror",
    "reap_orphans",
    "remove_task_worktrees",
    "validate_repo_reference",
]


# ---- worktrees ----------------------------------------------------------------------


def create_worktree(settings: Settings, input: WorktreeInput) -> WorktreeInfo:
    """A worktree for one subagent on its branch; idempotent, and keeps an existing branch.

    A lost worktree is checked out again from the branch; with `input.fresh` an
    existing one is too (its uncommitted changes, a failed run's, are discarded).
    """
    mirror = existing_mirror(input.mirror_path)
    path = task_dir_of(settings, input.task_id) / str(input.index)
    if input.branch.startswith("-") or not input.branch.strip():
        raise fail(f"invalid branch name {input.branch!r}", Errors.INVALID_INPUT)
    g = git_cmd(mirror)
    ref = f"refs/heads/{input.branch}"
    if input.fresh:
        discard_worktree(g, path)  # what a failed run left uncommitted is not kept
    if path.exists():
        entry = list_worktrees(g).get(str(path.resolve()))
        if entry is not None and "locked" not in entry and (path / ".git").is_file():
            if entry.get("branch") != ref:
                raise fail(
                    f"{path} already holds {entry.get('branch', 'a detached HEAD')}, "
                    f"not {input.branch}",
                    Errors.INVALID_INPUT,
                )
            return WorktreeInfo(path=str(path), branch=input.branch, head=entry["HEAD"])
        discard_worktree(g, path)  # half-made (a crash mid-checkout) or stray files
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        add_worktree(g, path, "-b", input.branch, str(path), input.base_commit)
    except git.GitCommandError as err:
        # Usually the branch outlived its worktree (a new round, or this host lost the
        # directory): check it out again, keeping its commits.
        g.worktree("prune")
        if not has_ref(g, ref):
            raise fail(
                f"cannot create worktree {input.branch} at {input.base_commit}: {stderr_of(err)}",
                Errors.INVALID_INPUT,
            ) from None
        add_worktree(g, path, str(path), input.branch)
        return WorktreeInfo(path=str(path), branch=input.branch, head=g.rev_parse(ref))
    head = input.base_commit if SHA.match(input.base_commit) else g.rev_parse(ref)
    return WorktreeInfo(path=str(path), branch=input.branch, head=head)


def commit_worktree(settings: Settings, input: CommitInput) -> CommitResult:
    """Commit everything in a worktree (if anything changed) and measure it against the base.

    The worktree is hostile input: nested repositories are made plain directories
    first (`neutralise_nested`), and git runs confined (`activities._git_env`).
    """
    work_tree = Path(input.worktree_path).resolve()
    admin = _admin_dir(settings, work_tree)
    mirror = str(admin.parent.parent)  # <mirror>/worktrees/<name>
    limits = WorktreeLimits.from_settings(settings, mirror, input.base_commit)
    violation = check_worktree_bounds(work_tree, limits)
    if violation is not None:
        raise fail(f"the subagent's work was not committed: {violation}", Errors.DISK_LIMIT)
    excludes = default_excludes_file(settings.data_dir)  # no build litter in commits
    g = WorktreeGit(work_tree, admin, admin.parent.parent, excludes=excludes)
    notes = neutralise_nested(work_tree)
    notes += _unlink_filled_gitlinks(g)
    try:
        message = input.message.strip() or "Subagent changes"
        staged, head, numstat = g.commit(message, input.base_commit)
    except GitFailed as err:
        raise fail(
            f"could not commit {work_tree.name}: {err.stderr[-STDERR_TAIL_CHARS:]}",
            Errors.INVALID_INPUT,
        ) from None
    return CommitResult(head=head, committed=staged, diff_stat=parse_numstat(numstat), notes=notes)


def neutralise_nested(work_tree: Path) -> list[str]:
    """Remove every `.git` below the top of a worktree, so git sees plain directories.

    A nested repository (a `.git` directory, file or symlink) carries configuration
    its writer chose; git would read it (filters, fsmonitor, hooks) when it meets
    the directory. Its files stay and are committed as plain files. Symlinks are
    never followed. Returns one note per repository removed, for the user.
    """
    notes = []
    for parent, dirs, files in os.walk(work_tree):
        here = Path(parent)
        if here == work_tree:
            dirs[:] = [d for d in dirs if d != ".git"]
            continue
        if ".git" in dirs or ".git" in files:
            rmtree(here / ".git")
            dirs[:] = [d for d in dirs if d != ".git"]
            rel = here.relative_to(work_tree)
            notes.append(
                f"{rel}/ held a nested git repository: its .git was removed and its files "
                "are committed as plain files"
            )
    return notes


def _unlink_filled_gitlinks(g: WorktreeGit) -> list[str]:
    """Turn a submodule path the subagent wrote files into from a gitlink into files."""
    listing = g.run("ls-files", "-s", "-z")[1].decode(errors="replace")
    notes = []
    for entry in filter(None, listing.split("\0")):
        meta, _, path = entry.partition("\t")
        if not meta.startswith("160000 "):
            continue
        target = g.work_tree / path
        if target.is_dir() and not target.is_symlink() and any(target.iterdir()):
            g.run("rm", "--cached", "--quiet", "--", path)
            notes.append(
                f"{path}/ was a submodule (gitlink) and now holds files written in the "
                "sandbox: they are committed as plain files in place of the submodule"
            )
    return notes


def _admin_dir(settings: Settings, work_tree: Path) -> Path:
    """The repository-side admin directory of a worktree, never trusting the worktree itself.

    The `.git` file is only a hint: it must point into one of our repositories (a
    task's, or a mirror for tasks started before those) at an admin directory that
    points back here. Otherwise (a sandbox replaced it) every admin directory is searched.
    """
    if not work_tree.is_relative_to(settings.worktrees_dir.resolve()):
        raise fail(f"{work_tree} is not a Switchboard worktree", Errors.INVALID_INPUT)
    expected = str(work_tree / ".git")
    candidates: list[Path] = []
    dotgit = work_tree / ".git"
    if dotgit.is_file() and not dotgit.is_symlink():
        hint = dotgit.read_text(errors="replace").strip().removeprefix("gitdir:").strip()
        candidates.append(Path(hint).resolve())
    candidates.extend(admin_dir_candidates(settings))
    for admin in candidates:
        if is_repository_of(settings, admin) and admin.parent.name == "worktrees":
            gitdir = admin / "gitdir"
            if gitdir.is_file() and gitdir.read_text(errors="replace").strip() == expected:
                return admin
    raise fail(f"no worktree registered at {work_tree} on this host", Errors.REPO_NOT_FOUND)


# ---- cleanup ------------------------------------------------------------------------


def remove_task_worktrees(
    settings: Settings, task_id: str, mirror_path: str | None, delete_branches: bool = False
) -> None:
    """Remove every worktree of a task (and with `delete_branches`, its branches and its
    own repository: nothing of a rejected or cancelled task is kept). Idempotent.

    Deleting the directories and pruning once per mirror has the same end state as
    `git worktree remove` per worktree, in one git call instead of one per worktree.
    """
    task_dir = task_dir_of(settings, task_id)
    mirrors: set[Path] = set()
    if mirror_path and (Path(mirror_path) / "HEAD").is_file():
        mirrors.add(Path(mirror_path).resolve())
    if task_dir.exists():
        for child in task_dir.iterdir():
            if (mirror := _mirror_of(settings, child)) is not None:
                mirrors.add(mirror)
        rmtree(task_dir)
    for mirror in mirrors:
        g = git_cmd(mirror)
        g.worktree("prune", with_exceptions=False)
        if delete_branches:
            prefix = f"refs/heads/{BRANCH_PREFIX}{task_id}/"
            names = g.for_each_ref("--format=%(refname:strip=2)", prefix).splitlines()
            if names:
                g.branch("-D", *names, with_exceptions=False)
    if delete_branches:
        remove_task_repo(settings, task_id)


def reap_orphans(settings: Settings, live_task_ids: set[str]) -> list[str]:
    """Remove worktrees of tasks that are no longer running; returns the task ids reaped."""
    root = settings.worktrees_dir
    if not root.is_dir():
        return []
    reaped = []
    for task_dir in sorted(root.iterdir()):
        if (
            task_dir.is_dir()
            and task_dir.name not in live_task_ids
            and TASK_ID.match(task_dir.name)
        ):
            remove_task_worktrees(settings, task_dir.name, None)
            reaped.append(task_dir.name)
    return reaped


def _mirror_of(settings: Settings, worktree: Path) -> Path | None:
    """The repository a worktree belongs to, if its `.git` file points into one of ours."""
    dotgit = worktree / ".git"
    if not dotgit.is_file():
        return None
    hint = dotgit.read_text(errors="replace").strip().removeprefix("gitdir:").strip()
    mirror = Path(hint).resolve().parent.parent
    if is_repository_of(settings, mirror) and (mirror / "HEAD").is_file():
        return mirror
    return None
