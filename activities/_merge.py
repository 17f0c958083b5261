"""Merging subagent branches in a scratch worktree, publishing, and diffs."""

from __future__ import annotations

from pathlib import Path

import git

from activities._git_env import NO_DRIVERS, GitFailed, WorktreeGit
from activities._git_util import (
    FETCH_TIMEOUT_SECONDS,
    STDERR_TAIL_CHARS,
    add_worktree,
    credentials_for,
    discard_worktree,
    existing_mirror,
    fail,
    flock,
    git_cmd,
    has_ref,
    remote_git,
    split_z,
    stderr_of,
    task_dir_of,
)
from activities._task_repo import published_marker
from switchboard.contracts import (
    IntegrateInput,
    MergeOutcome,
)
from switchboard.models import DiffStat, MergeResult
from switchboard.repo_refs import redact_repo
from switchboard.settings import Settings
from switchboard.wire import Errors

INTEGRATION_DIR = "_integration"


# ---- merge and diff -----------------------------------------------------------------


def integrate_branches(settings: Settings, input: IntegrateInput) -> MergeOutcome:
    """Merge the subagent branches onto the base in a scratch worktree; never force a conflict."""
    g = git_cmd(existing_mirror(input.mirror_path))
    path = task_dir_of(settings, input.task_id) / INTEGRATION_DIR
    branches = _branches_with_work(g, input.base_commit, input.branches)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A retried attempt may overlap one still running: they would share the scratch worktree.
    with flock(path.with_name(f"{INTEGRATION_DIR}.lock")):
        result = _merge(g, path, input, branches)
        if not result.merged:
            return MergeOutcome(result=result)
        if input.publish and (input.is_local or input.push):
            _publish(settings, g, input, result)
    assert result.commit is not None
    return MergeOutcome(result=result, stat=diff_stat(g, input.base_commit, result.commit))


def _merge(g: git.Git, path: Path, input: IntegrateInput, branches: list[str]) -> MergeResult:
    """The merges run confined (`WorktreeGit`): they write subagent content into `path`."""
    discard_worktree(g, path)
    add_worktree(g, path, "-B", input.integration_branch, str(path), input.base_commit)
    conflict: MergeResult | None = None
    try:
        mirror = existing_mirror(input.mirror_path)
        wg = WorktreeGit(path, _admin_of(mirror, path), mirror, write_tree=True)
        head, failed = wg.merge(branches)
        if failed is not None:
            attempted = branches[: failed.merged + 1]
            conflict = _abort_merge(wg, failed, input.integration_branch, attempted)
    finally:
        discard_worktree(g, path)
    if conflict is not None:
        # Only a clean merge leaves an integration branch behind.
        g.update_ref("-d", f"refs/heads/{input.integration_branch}")
        return conflict
    merged = ", ".join(branches) or "nothing to merge"
    return MergeResult(
        branch=input.integration_branch, merged=True, commit=head, message=f"merged {merged}"
    )


def _admin_of(mirror: Path, path: Path) -> Path:
    """The admin directory of a worktree the host has just added (its `.git` is ours)."""
    hint = (path / ".git").read_text().strip().removeprefix("gitdir:").strip()
    admin = Path(hint).resolve()
    if not admin.is_relative_to(mirror / "worktrees"):
        raise fail(f"{path} is not a worktree of {mirror}", Errors.INVALID_INPUT)
    return admin


def _abort_merge(
    wg: WorktreeGit, err: GitFailed, integration_branch: str, attempted: list[str]
) -> MergeResult:
    """Undo a failed merge and say which files conflict; a failure that is no conflict raises."""
    out = wg.run("diff", "--name-only", "--diff-filter=U", "-z", *NO_DRIVERS, ok=range(256))[1]
    conflicts = split_z(out.decode(errors="replace"))
    wg.run("merge", "--abort", ok=range(256))
    branch = attempted[-1]
    if not conflicts:
        tail = err.stderr[-STDERR_TAIL_CHARS:] or f"git exited with {err.status}"
        raise fail(f"merge of {branch} failed: {tail}", Errors.INVALID_INPUT)
    before = f" (merged before it: {', '.join(attempted[:-1])})" if len(attempted) > 1 else ""
    return MergeResult(
        branch=integration_branch,
        merged=False,
        conflicts=conflicts,
        message=f"merge of {branch} conflicts in {', '.join(conflicts)}{before}",
    )


def _branches_with_work(g: git.Git, base: str, branches: list[str]) -> list[str]:
    """The given branches, in order, minus those with no commits beyond `base`."""
    if not branches:
        return []
    refs = [f"refs/heads/{b}" for b in branches]
    fmt = "--format=%(refname)"
    existing = set(g.for_each_ref(fmt, *refs).splitlines())
    if missing := [b for b, r in zip(branches, refs, strict=True) if r not in existing]:
        raise fail(f"no such branch in the mirror: {', '.join(missing)}", Errors.INVALID_INPUT)
    ahead = set(g.for_each_ref(fmt, f"--no-merged={base}", *refs).splitlines())
    return [b for b, r in zip(branches, refs, strict=True) if r in ahead]


def _publish(settings: Settings, g: git.Git, input: IntegrateInput, result: MergeResult) -> None:
    """Write the merge as `target_branch` of the user's repository, never over a stranger's.

    The branch is overwritten only when its tip is a commit this mirror published
    there before (a retry, or a later publish of the same task); an existing branch
    with any other tip was not written by Switchboard and is left alone.
    """
    mirror = existing_mirror(input.mirror_path)
    shown, user, password = credentials_for(settings, input.repo, input.credential_ref)
    remote = remote_git(mirror, user, password)
    assert result.commit is not None
    try:
        found = str(remote.ls_remote("origin", f"refs/heads/{input.target_branch}"))
        tip = found.split("\t", 1)[0] if found else ""
        if tip and not _was_published(settings, mirror, input.target_branch, tip):
            _refuse_publish(input, result, tip)
            return
        # Recorded before the push, so a retry after a push whose answer was lost goes on.
        marker = published_marker(mirror, settings, input.target_branch, result.commit)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        refspec = f"refs/heads/{input.integration_branch}:refs/heads/{input.target_branch}"
        lease = f"--force-with-lease=refs/heads/{input.target_branch}:{tip}"
        remote.push("--quiet", lease, "origin", refspec, kill_after_timeout=FETCH_TIMEOUT_SECONDS)
    except git.GitCommandError as err:
        if not input.is_local:
            raise fail(
                f"push of {input.target_branch} to {shown} failed: {stderr_of(err)}",
                Errors.REPO_FETCH_FAILED,
                retry=True,
            ) from None
        # Usually the user has that branch checked out: retrying cannot help, and the
        # merge itself is good, so report where it is instead of failing the task.
        result.message = (
            f"merged into {input.integration_branch} in the mirror {input.mirror_path}, but "
            f"writing branch {input.target_branch} to {shown} failed: {stderr_of(err)}"
        )
        return
    result.branch = input.target_branch
    result.pushed = not input.is_local


def _was_published(settings: Settings, repo: Path, target_branch: str, commit: str) -> bool:
    """Whether Switchboard published `commit` as `target_branch` (any task of this repository;
    the ref is where Switchboard recorded it before per-task repositories)."""
    marker = published_marker(repo, settings, target_branch, commit)
    if marker.is_file():
        return True
    home = marker.parent.parent.parent
    return has_ref(git_cmd(home), f"refs/switchboard-published/{target_branch}/{commit}")


def _refuse_publish(input: IntegrateInput, result: MergeResult, tip: str) -> None:
    message = (
        f"branch {input.target_branch} already exists in {redact_repo(input.repo)} at {tip[:12]}, "
        "which Switchboard did not write: it was not overwritten"
    )
    if not input.is_local:
        raise fail(message, Errors.INVALID_INPUT)
    result.message = (
        f"merged into {input.integration_branch} in the mirror {input.mirror_path}, but {message}"
    )


def diff_stat(g: git.Git, base: str, head: str) -> DiffStat:
    """Files, insertions and deletions from `base` to `head` in a mirror (no drivers run)."""
    out: bytes = g.diff(
        "--numstat", "-z", "--no-color", *NO_DRIVERS, base, head, stdout_as_string=False
    )
    return parse_numstat(out)


def parse_numstat(out: bytes) -> DiffStat:
    """`git diff --numstat -z`, counted as `switchboard.diffs` does.

    A renamed file counts once, under its new name; binary files count 0 lines.
    """
    fields = out.decode("utf-8", errors="replace").split("\0")
    result = DiffStat()
    i = 0
    while i < len(fields):
        entry, i = fields[i], i + 1
        if not entry:
            continue
        added, deleted, name = entry.split("\t", 2)
        if not name:  # a rename: "<old>\0<new>" follow as their own fields
            name, i = fields[i + 1], i + 2
        result.files.append(name)
        result.insertions += int(added) if added.isdigit() else 0
        result.deletions += int(deleted) if deleted.isdigit() else 0
    result.files_changed = len(result.files)
    return result
