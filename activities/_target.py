"""The task's change against its target branch's current tip (issue #12 item 6).

The target (the branch the task started from) may move while the task runs or waits
at the gate. `check_target` fetches its tip into the task's repository and says how
many commits the change is behind it and in which files a merge onto it would
conflict (`git merge-tree`: no worktree, nothing checked out, no hook or driver run).
"""

from __future__ import annotations

from datetime import UTC, datetime

import git

from activities._git_util import (
    FETCH_TIMEOUT_SECONDS,
    credentials_for,
    existing_mirror,
    fail,
    git_cmd,
    remote_git,
    stderr_of,
)
from switchboard.contracts import TargetInput
from switchboard.models import TargetCheck
from switchboard.repo_refs import redact_repo
from switchboard.settings import Settings
from switchboard.wire import Errors

TARGET_REF = "refs/switchboard/target"
"""Where the target's fetched tip is kept in the task's repository."""


def check_target(settings: Settings, input: TargetInput) -> TargetCheck:
    """How `input.change_commit` (based on `input.base_commit`) stands against the tip.

    Raises:
        ApplicationError: `RepoFetchFailed` (retryable) when the repository cannot be read.
    """
    repo = existing_mirror(input.mirror_path)
    now = datetime.now(UTC)
    check = TargetCheck(branch=input.branch, base_commit=input.base_commit, checked_at=now)
    if input.branch.startswith("-") or not input.branch.strip():
        check.message = f"{input.branch!r} is no branch: nothing to compare with"
        return check
    shown, user, password = credentials_for(settings, input.repo, input.credential_ref)
    remote = remote_git(repo, user, password)
    ref = f"refs/heads/{input.branch.removeprefix('refs/heads/')}"
    try:
        found = str(remote.ls_remote("origin", ref, kill_after_timeout=FETCH_TIMEOUT_SECONDS))
        if not found:
            check.message = f"{input.branch} is not a branch of {redact_repo(shown)}: fixed base"
            return check
        remote.fetch(
            "--quiet",
            "--no-tags",
            "origin",
            f"+{ref}:{TARGET_REF}",
            kill_after_timeout=FETCH_TIMEOUT_SECONDS,
        )
    except git.GitCommandError as err:
        raise fail(
            f"could not read {input.branch} of {redact_repo(shown)}: {stderr_of(err)}",
            Errors.REPO_FETCH_FAILED,
            retry=True,
        ) from None
    g = git_cmd(repo)
    check.tip = g.rev_parse("--verify", f"{TARGET_REF}^{{commit}}")
    check.behind = int(g.rev_list("--count", f"{input.base_commit}..{check.tip}"))
    if check.behind and input.change_commit:
        check.conflicts = _conflicts(g, check.tip, input.change_commit)
    check.message = describe(check)
    return check


def _conflicts(g: git.Git, tip: str, change: str) -> list[str]:
    """Files a merge of `change` onto `tip` would stop on (empty: it merges cleanly)."""
    status, out, err = g.merge_tree(
        "--write-tree",
        "--name-only",
        "--no-messages",
        "-z",
        tip,
        change,
        with_exceptions=False,
        with_extended_output=True,
        stdout_as_string=True,
    )
    if status not in (0, 1):
        raise fail(f"git merge-tree failed: {str(err).strip()[-800:]}", Errors.INVALID_INPUT)
    if status == 0:
        return []
    # <tree>\0<path>\0<path>\0...\0 (then an empty field: no messages were asked for)
    return sorted({name for name in out.split("\0")[1:] if name})


def describe(check: TargetCheck) -> str:
    """One line for the status, the event log and the gate."""
    if check.tip is None:
        return check.message
    if not check.behind:
        return f"up to date with {check.branch} ({check.tip[:12]})"
    line = f"behind {check.branch} by {check.behind} commit{'s' if check.behind != 1 else ''}"
    if check.conflicts:
        return f"{line}, and conflicts with its tip {check.tip[:12]} in " + ", ".join(
            check.conflicts[:20]
        )
    return f"{line}; merges cleanly onto its tip {check.tip[:12]}"
