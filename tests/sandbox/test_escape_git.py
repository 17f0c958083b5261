"""The escape battery for host-side git: nothing a subagent writes makes the host run it.

Each attack of `escape_attacks` is written into a real worktree, then every host-side
git step a task takes on it runs for real: commit (twice, as a retry would), a
second round on the same branch, a review worktree of the branch, the merge and
the publish into the user's repository. A canary file on the host must stay
untouched. `test_escape_task.py` drives the same attacks through whole tasks in
both sandbox backends.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from activities import _git
from activities._git_env import confinement
from switchboard import wire
from switchboard.contracts import (
    CommitInput,
    IntegrateInput,
    PreparedRepo,
    PrepareRepoInput,
    WorktreeInput,
)
from switchboard.settings import Settings
from tests.sandbox.escape_attacks import ATTACKS, REARM

TASK = "task-escape"
CANARY_TEXT = "untouched\n"
ENV = {
    "PATH": "/usr/bin:/bin",
    "GIT_AUTHOR_NAME": "User",
    "GIT_AUTHOR_EMAIL": "user@example.invalid",
    "GIT_COMMITTER_NAME": "User",
    "GIT_COMMITTER_EMAIL": "user@example.invalid",
}


def sh(cwd: Path, script: str) -> None:
    # The attacker's own commands may fail (a read-only `.git`, say); only effects count.
    subprocess.run(
        ["sh", "-c", script], cwd=cwd, env={**ENV, "HOME": str(cwd)}, capture_output=True
    )


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env={**ENV, "HOME": str(cwd)}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def make_source(path: Path) -> Path:
    """A user's repository that already holds a submodule gitlink at vendor/lib."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("hello\n")
    (path / ".gitmodules").write_text('[submodule "lib"]\n\tpath = vendor/lib\n\turl = ./lib\n')
    git(path, "add", "README.md", ".gitmodules")
    git(path, "update-index", "--add", "--cacheinfo", f"160000,{'1' * 40},vendor/lib")
    git(path, "commit", "-q", "-m", "initial")
    return path


def hostile_global_config(path: Path, pwn: str) -> Path:
    """What a host's own ~/.gitconfig may hold (git-lfs installs a filter there)."""
    path.write_text(
        f'[filter "hostfilter"]\n\tclean = {pwn}; cat\n\tsmudge = {pwn}; cat\n'
        f'[diff "hostdiff"]\n\ttextconv = {pwn}; cat\n'
        f'[merge "hostmerge"]\n\tdriver = {pwn}; true\n'
    )
    return path


def prepare(settings: Settings, source: Path) -> PreparedRepo:
    return _git.prepare_mirror(settings, PrepareRepoInput(repo=str(source)))


def worktree(settings: Settings, prepared: PreparedRepo, index: int, branch: str) -> Path:
    info = _git.create_worktree(
        settings,
        WorktreeInput(
            task_id=TASK,
            index=index,
            mirror_path=prepared.mirror_path,
            base_commit=prepared.base_commit,
            branch=branch,
        ),
    )
    return Path(info.path)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_host_git_never_runs_what_a_worktree_holds(
    attack: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_text(CANARY_TEXT)
    pwn = f"echo pwned >> {canary}"
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(hostile_global_config(tmp_path / "g", pwn)))
    settings = Settings(data_dir=tmp_path / "data", host_id="escape-host", _env_file=None)
    source = make_source(tmp_path / "user-repo")
    prepared = prepare(settings, source)
    branch = wire.subagent_branch(TASK, 1)
    tree = worktree(settings, prepared, 1, branch)
    script = ATTACKS[attack].format(pwn=pwn, root=tree)
    commit = CommitInput(
        worktree_path=str(tree), base_commit=prepared.base_commit, message="round 1"
    )

    sh(tree, script)
    assert canary.read_text() == CANARY_TEXT, "the attack fired in its own sandbox: fix the test"
    first = _git.commit_worktree(settings, commit)
    retried = _git.commit_worktree(settings, commit)  # a retried finish_subagent
    assert retried.head == first.head
    # Round 2 (request-changes): the same worktree, re-armed.
    sh(tree, script + REARM.format(root=tree))
    second = _git.commit_worktree(settings, commit.model_copy(update={"message": "round 2"}))
    assert second.committed
    # The branch checked out again (a new round on another host), then merged and published.
    _git.remove_task_worktrees(settings, TASK, prepared.mirror_path)
    again = worktree(settings, prepared, 1, branch)
    assert (again / "round2.txt").is_file()
    _git.remove_task_worktrees(settings, TASK, prepared.mirror_path)
    outcome = _git.integrate_branches(
        settings,
        IntegrateInput(
            task_id=TASK,
            repo=prepared.repo,
            mirror_path=prepared.mirror_path,
            base_commit=prepared.base_commit,
            branches=[branch],
            integration_branch=f"{wire.task_branch(TASK)}/merged",
            target_branch=wire.task_branch(TASK),
            is_local=True,
            publish=True,
        ),
    )
    assert outcome.result.merged, outcome.result.message
    git(source, "checkout", "-q", wire.task_branch(TASK))  # the user checks it out

    assert canary.read_text() == CANARY_TEXT, f"{attack}: the host ran the subagent's command"
    files = git(source, "ls-tree", "-r", "--name-only", "HEAD").splitlines()
    assert not [f for f in files if f == ".git" or f.endswith("/.git")]
    modes = git(source, "ls-tree", "-r", "HEAD").splitlines()
    gitlinks = [m.split("\t")[1] for m in modes if m.startswith("160000")]
    assert set(gitlinks) <= {"vendor/lib"}, "a subagent-made repository became a gitlink"


def test_nested_repositories_are_committed_as_plain_files_and_reported(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data", host_id="escape-host", _env_file=None)
    prepared = prepare(settings, make_source(tmp_path / "user-repo"))
    tree = worktree(settings, prepared, 1, wire.subagent_branch(TASK, 1))
    sh(tree, ATTACKS["existing_gitlink"].format(pwn="true", root=tree))
    sh(tree, ATTACKS["nested_filter"].format(pwn="true", root=tree))

    result = _git.commit_worktree(
        settings, CommitInput(worktree_path=str(tree), base_commit=prepared.base_commit, message="")
    )

    assert sorted(result.diff_stat.files) == [
        "nested/.gitattributes",
        "nested/f",
        "vendor/lib/.gitattributes",
        "vendor/lib/f",
    ]
    # The gitlink's removal is in the commit (stats ignore submodules; the note says it).
    assert len(result.notes) == 3
    assert any("vendor/lib/ was a submodule" in n for n in result.notes)
    assert any(n.startswith("nested/ held a nested git repository") for n in result.notes)
    assert not (tree / "nested" / ".git").exists()
    assert (tree / "nested" / "f").read_text() == "two\n"


def test_worktree_git_is_confined_where_bwrap_runs() -> None:
    """Where bubblewrap is installed, the battery above ran with both layers."""
    if shutil.which("bwrap") is None:
        pytest.skip("no bubblewrap here: host-side git runs neutralised only")
    assert confinement() == "bwrap"
