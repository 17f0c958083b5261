"""The escape battery for the host-side git that is not a commit: step checkpoints
(a snapshot before each writing tool call, a restore after a crash) and `git worktree
add` (a later round's checkout of the branch, the integration worktree).

Every attack of `escape_attacks` (plus the ones below) is written into a real worktree,
then checkpointed, restored, committed, re-armed for a request-changes round,
checkpointed and restored again, and the branch checked out anew. A canary on the
host must stay untouched. The last two tests show that these git commands run
confined, not only neutralised: a program that the repository's own (host-written)
configuration starts, standing for a git knob nobody thought of, runs without the
host's files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from activities import _git
from activities._checkpoint import Checkpoints
from activities._excludes import default_excludes_file
from switchboard import wire
from switchboard.contracts import CommitInput
from switchboard.settings import Settings
from tests.sandbox.escape_attacks import ATTACKS, REARM
from tests.sandbox.test_escape_git import (
    CANARY_TEXT,
    TASK,
    git,
    hostile_global_config,
    make_source,
    prepare,
    sh,
    worktree,
)

# The worktree's own `.git` replaced, the ways a subagent could if its bind failed:
# a symlink to a repository it built, a file aimed at the task repository's neighbour.
EXTRA: dict[str, str] = {
    "dot_git_symlink": "printf '#!/bin/sh\\n{pwn}\\n' > evil.sh && chmod +x evil.sh; "
    "git init -q --bare evilrepo && git -C evilrepo config core.bare false && "
    "git -C evilrepo config core.fsmonitor {root}/evil.sh && "
    "git -C evilrepo config filter.evil.clean '{pwn}; cat' && "
    "git -C evilrepo config include.path {root}/evil.cfg && "
    "printf '[core]\\n\\tsshCommand = {pwn}\\n' > evil.cfg && "
    "echo '* filter=evil' > .gitattributes && "
    "(rm -f .git && ln -s evilrepo .git || true) && echo two > new.txt",
    "dot_git_elsewhere": "printf '#!/bin/sh\\n{pwn}\\n' > evil.sh && chmod +x evil.sh; "
    "mkdir -p ../../evil-admin && git init -q --bare ../../evil-admin/repo && "
    "git -C ../../evil-admin/repo config core.bare false && "
    "git -C ../../evil-admin/repo config core.fsmonitor {root}/evil.sh && "
    "git -C ../../evil-admin/repo config core.sshCommand '{pwn}' && "
    '(echo "gitdir: $(cd ../../evil-admin/repo && pwd)" > .git || true) && echo two > x.txt',
}


def settings_for(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", host_id="escape-host", _env_file=None)


def checkpoints_of(settings: Settings, tree: Path, tmp_path: Path) -> Checkpoints:
    """The checkpoints `subagent_step` takes of this worktree (`activities/step.py`)."""
    repo = _git._admin_dir(settings, tree).parent.parent
    index = tmp_path / "transcripts" / "t.checkpoint" / "index"
    return Checkpoints(repo, tree, index, default_excludes_file(settings.data_dir))


@pytest.mark.parametrize("attack", sorted(ATTACKS) + sorted(EXTRA))
def test_checkpoints_and_checkouts_never_run_what_a_worktree_holds(
    attack: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_text(CANARY_TEXT)
    pwn = f"echo pwned >> {canary}"
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(hostile_global_config(tmp_path / "g", pwn)))
    settings = settings_for(tmp_path)
    prepared = prepare(settings, make_source(tmp_path / "user-repo"))
    branch = wire.subagent_branch(TASK, 1)
    tree = worktree(settings, prepared, 1, branch)
    snapshots = checkpoints_of(settings, tree, tmp_path)
    script = {**ATTACKS, **EXTRA}[attack].format(pwn=pwn, root=tree)
    commit = CommitInput(worktree_path=str(tree), base_commit=prepared.base_commit, message="1")

    before = snapshots.take()  # before the first writing call
    sh(tree, script)
    assert canary.read_text() == CANARY_TEXT, "the attack fired in its own sandbox: fix the test"
    after = snapshots.take()  # before the next writing call: the attack is in the worktree
    snapshots.restore(before)  # a crash in that call: rolled back
    snapshots.restore(after)
    assert _git.commit_worktree(settings, commit).head
    # Request changes: the same worktree (create_worktree keeps it), re-armed.
    again = worktree(settings, prepared, 1, branch)
    assert again == tree
    sh(tree, script + REARM.format(root=tree))
    snapshots.restore(snapshots.take())
    second = _git.commit_worktree(settings, commit.model_copy(update={"message": "2"}))
    assert second.committed
    # A later round elsewhere: the branch checked out anew.
    _git.remove_task_worktrees(settings, TASK, prepared.mirror_path)
    fresh = worktree(settings, prepared, 1, branch)
    assert (fresh / "round2.txt").is_file()

    assert canary.read_text() == CANARY_TEXT, f"{attack}: the host ran the subagent's command"


def _host_configured_filter(settings: Settings, tree: Path, canary: Path, tmp_path: Path) -> Path:
    """Give the task's repository a filter that writes the canary (the stand-in for an
    unknown knob that runs a program) and a worktree whose attributes apply it."""
    repo = _git._admin_dir(settings, tree).parent.parent
    program = tmp_path / "knob.sh"
    program.write_text(f"#!/bin/sh\necho ran-unconfined >> {canary}\ncat\n")
    program.chmod(0o755)
    git(repo, "config", "filter.knob.clean", str(program))
    git(repo, "config", "filter.knob.smudge", str(program))
    (tree / ".gitattributes").write_text("*.txt filter=knob\n")
    (tree / "a.txt").write_text("data\n")
    return repo


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="no bubblewrap: neutralised only")
def test_checkpoint_git_runs_confined(tmp_path: Path) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_text(CANARY_TEXT)
    settings = settings_for(tmp_path)
    prepared = prepare(settings, make_source(tmp_path / "user-repo"))
    tree = worktree(settings, prepared, 1, wire.subagent_branch(TASK, 1))
    _host_configured_filter(settings, tree, canary, tmp_path)
    snapshots = checkpoints_of(settings, tree, tmp_path)

    taken = snapshots.take()
    (tree / "a.txt").write_text("changed\n")
    snapshots.restore(taken)

    # The program is not even there to run: the host's files are out of sight.
    assert canary.read_text() == CANARY_TEXT
    assert (tree / "a.txt").read_text() == "data\n"


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="no bubblewrap: neutralised only")
def test_worktree_add_runs_confined(tmp_path: Path) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_text(CANARY_TEXT)
    settings = settings_for(tmp_path)
    prepared = prepare(settings, make_source(tmp_path / "user-repo"))
    branch = wire.subagent_branch(TASK, 1)
    tree = worktree(settings, prepared, 1, branch)
    repo = _host_configured_filter(settings, tree, canary, tmp_path)
    # Committed by plain git here (the test's own, unconfined), then checked out anew.
    git(repo, "config", "--unset", "filter.knob.clean")
    git(tree, "add", "-A")
    git(tree, "commit", "-qm", "attributes")
    git(repo, "config", "filter.knob.clean", str(tmp_path / "knob.sh"))
    _git.remove_task_worktrees(settings, TASK, prepared.mirror_path)

    fresh = worktree(settings, prepared, 1, branch)  # `git worktree add` of the branch

    assert (fresh / "a.txt").read_text() == "data\n"
    assert canary.read_text() == CANARY_TEXT, "git worktree add ran a program on the host"
