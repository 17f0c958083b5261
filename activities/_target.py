"""The task's change against its target branch's current tip (issue #12 item 6).

The target (the branch the task started from) may move while the task runs or waits
at the gate. `check_target` asks for its tip (`git ls-remote`), fetches it into the
task's repository unless it is the task's base or was fetched before (nothing to
fetch: B1 paid ~5 git processes for it at every gate), and says how many commits the
change is behind it and in which files a merge onto it would conflict
(`git merge-tree`: no worktree, nothing checked out, no hook or driver run).
"""

from __future__ import annotations

from datetime import UTC, datetime

import git

from activities._git_util import (
    FETCH_TIMEOUT_SECONDS,
    SHA,
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
    g = git_cmd(repo)
    try:
        tip = _remote_tip(remote, ref)
        if tip is None:
            check.message = f"{input.branch} is not a branch of {redact_repo(shown)}: fixed base"
            return check
        if tip != input.base_commit and tip != _kept_tip(g):
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
    if tip != input.base_commit:  # else nothing moved: nothing fetched, nothing behind
        # The fetch may have raced a push: the tip it kept is the one compared.
        tip = g.rev_parse("--verify", f"{TARGET_REF}^{{commit}}")
        check.behind = int(g.rev_list("--count", f"{input.base_commit}..{tip}"))
    check.tip = tip
    if check.behind and input.change_commit:
        check.conflicts = _conflicts(g, tip, input.change_commit)
    check.message = describe(check)
    return check


def _remote_tip(remote: git.Git, ref: str) -> str | None:
    """The commit `ref` names in the user's repository now (None: no such branch)."""
    listed = str(remote.ls_remote("origin", ref, kill_after_timeout=FETCH_TIMEOUT_SECONDS))
    for line in listed.splitlines():
        sha, _, name = line.partition("\t")
        if name == ref:  # ls-remote matches patterns by their tail: keep the exact name
            if not SHA.match(sha):
                raise fail(
                    f"git ls-remote named no commit for {ref}: {sha!r}", Errors.INVALID_INPUT
                )
            return sha
    return None


def _kept_tip(g: git.Git) -> str | None:
    """The tip a check fetched into this repository before (None: none yet)."""
    status, out, _ = g.rev_parse(
        "--verify",
        "--quiet",
        f"{TARGET_REF}^{{commit}}",
        with_exceptions=False,
        with_extended_output=True,
    )
    return str(out).strip() if status == 0 else None


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
