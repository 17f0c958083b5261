"""Repository activities against real git repositories in temporary directories."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import _git
from activities._reach import unreachable_reason
from activities._transcripts import mark_task_ended
from activities.repo import RepoActivities
from switchboard import diffs, wire
from switchboard.contracts import (
    CleanupInput,
    CommitInput,
    IntegrateInput,
    PreparedRepo,
    PrepareRepoInput,
    WorktreeInfo,
    WorktreeInput,
)
from switchboard.settings import Settings

TASK = "task-01TEST"
IDENTITY = {
    "GIT_AUTHOR_NAME": "User",
    "GIT_AUTHOR_EMAIL": "user@example.invalid",
    "GIT_COMMITTER_NAME": "User",
    "GIT_COMMITTER_EMAIL": "user@example.invalid",
}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", **IDENTITY, "HOME": str(cwd)},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def commit_file(repo: Path, name: str, text: str, message: str | None = None) -> str:
    (repo / name).parent.mkdir(parents=True, exist_ok=True)
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message or f"write {name}")
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", host_id="test-host")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """The user's repository: default branch `trunk` (not main), two files, one tag."""
    repo = tmp_path / "user-repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "trunk")
    commit_file(repo, "README.md", "hello\n")
    commit_file(repo, "src/app.py", "line 1\nline 2\nline 3\n")
    git(repo, "tag", "v1")
    git(repo, "branch", "feature")
    return repo


@pytest.fixture
def acts(settings: Settings) -> RepoActivities:
    return RepoActivities(settings)


async def run(fn: Callable[..., Any], arg: Any) -> Any:
    return await ActivityEnvironment().run(fn, arg)


async def prepare(acts: RepoActivities, repo: Path | str, base_ref: str | None = None) -> Any:
    return await run(acts.prepare_repo, PrepareRepoInput(repo=str(repo), base_ref=base_ref))


async def worktree(acts: RepoActivities, prepared: PreparedRepo, index: int) -> WorktreeInfo:
    info: WorktreeInfo = await run(
        acts.create_worktree,
        WorktreeInput(
            task_id=TASK,
            index=index,
            mirror_path=prepared.mirror_path,
            base_commit=prepared.base_commit,
            branch=wire.subagent_branch(TASK, index),
        ),
    )
    return info


async def work_on(
    acts: RepoActivities, prepared: PreparedRepo, index: int, files: dict[str, str]
) -> str:
    """A subagent's round: worktree, write files, commit. Returns the branch."""
    info = await worktree(acts, prepared, index)
    for name, text in files.items():
        (Path(info.path) / name).parent.mkdir(parents=True, exist_ok=True)
        (Path(info.path) / name).write_text(text)
    await run(
        acts.commit_worktree,
        CommitInput(worktree_path=info.path, base_commit=prepared.base_commit, message="work"),
    )
    return info.branch


def integrate_input(prepared: PreparedRepo, branches: list[str], **kw: Any) -> IntegrateInput:
    return IntegrateInput(
        task_id=TASK,
        repo=prepared.repo,
        mirror_path=prepared.mirror_path,
        base_commit=prepared.base_commit,
        branches=branches,
        integration_branch=f"{wire.task_branch(TASK)}/merged",
        target_branch=wire.task_branch(TASK),
        is_local=prepared.is_local,
        **kw,
    )


def mirror_branches(prepared: PreparedRepo) -> list[str]:
    out = git(Path(prepared.mirror_path), "for-each-ref", "--format=%(refname:short)", "refs/heads")
    return out.splitlines()


async def expect_error(coro: Any, kind: str, *, retryable: bool, contains: str) -> None:
    with pytest.raises(ApplicationError) as caught:
        await coro
    assert caught.value.type == kind
    assert caught.value.non_retryable is not retryable
    assert contains in str(caught.value)


# ---- mirror ---------------------------------------------------------------------------


async def test_mirror_created_once_and_updated(acts: RepoActivities, source: Path) -> None:
    first = await prepare(acts, source)
    assert first.is_local and first.repo == str(source.resolve())
    assert first.base_ref == "trunk"  # the remote's default branch, not a guessed "main"
    assert first.base_commit == git(source, "rev-parse", "trunk")
    assert first.host_queue == wire.host_queue("test-host")
    mirror = Path(first.mirror_path)
    assert git(mirror, "rev-parse", "--is-bare-repository") == "true"
    marker = mirror / "objects" / "marker"
    marker.write_text("proves the mirror is reused, not re-created")

    new_head = commit_file(source, "NEW.md", "new\n")
    second = await prepare(acts, source)
    assert second.mirror_path == first.mirror_path and marker.exists()
    assert second.base_commit == new_head


async def test_base_ref_branch_tag_and_commit(acts: RepoActivities, source: Path) -> None:
    tag_commit = git(source, "rev-parse", "v1")
    commit_file(source, "later.txt", "x\n")
    feature = await prepare(acts, source, "feature")
    assert (feature.base_ref, feature.base_commit) == ("feature", tag_commit)
    tagged = await prepare(acts, source, "v1")
    assert tagged.base_commit == tag_commit
    by_sha = await prepare(acts, source, tag_commit[:10])
    assert by_sha.base_commit == tag_commit
    default = await prepare(acts, source)
    assert default.base_commit == git(source, "rev-parse", "trunk") != tag_commit


async def test_bad_repositories_are_refused(
    acts: RepoActivities, source: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nope"
    await expect_error(
        prepare(acts, missing), wire.Errors.REPO_NOT_FOUND, retryable=False, contains="not exist"
    )
    plain = tmp_path / "plain"
    plain.mkdir()
    await expect_error(
        prepare(acts, plain), wire.Errors.REPO_NOT_FOUND, retryable=False, contains="not a git"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    await expect_error(
        prepare(acts, empty), wire.Errors.INVALID_INPUT, retryable=False, contains="no commits"
    )
    await expect_error(
        prepare(acts, source, "no-such-branch"),
        wire.Errors.INVALID_INPUT,
        retryable=False,
        contains="no-such-branch",
    )
    await expect_error(
        prepare(acts, "file:///nonexistent/repo.git"),
        wire.Errors.REPO_FETCH_FAILED,
        retryable=True,
        contains="does not appear to be a git",
    )


def test_validate_repo_reference(source: Path, tmp_path: Path) -> None:
    _git.validate_repo_reference(str(source))
    _git.validate_repo_reference("https://example.invalid/org/repo.git")
    _git.validate_repo_reference("git@example.invalid:org/repo.git")
    with pytest.raises(ValueError, match="does not exist"):
        _git.validate_repo_reference(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="not its top level"):
        _git.validate_repo_reference(str(source / "src"))  # inside a repo, not its top


def test_concurrent_prepares_of_one_repo(settings: Settings, source: Path) -> None:
    results: list[PreparedRepo] = []
    errors: list[BaseException] = []

    def prepare_once() -> None:
        try:
            results.append(_git.prepare_mirror(settings, PrepareRepoInput(repo=str(source))))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=prepare_once) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len({(r.mirror_path, r.base_commit) for r in results}) == 1 and len(results) == 3
    assert [p.name for p in settings.mirrors_dir.resolve().glob("*.git*")] == [
        Path(results[0].mirror_path).name
    ]


# ---- worktrees and commits ---------------------------------------------------------------


async def test_six_worktrees_on_six_branches(acts: RepoActivities, source: Path) -> None:
    prepared = await prepare(acts, source)
    infos = await asyncio.gather(*(worktree(acts, prepared, i) for i in range(6)))
    assert len({i.path for i in infos}) == 6
    for index, info in enumerate(infos):
        assert info.branch == f"switchboard/{TASK}/{index}"
        assert info.head == prepared.base_commit
        assert git(Path(info.path), "branch", "--show-current") == info.branch
        assert (Path(info.path) / "src" / "app.py").exists()
    again = await worktree(acts, prepared, 3)  # a retried activity returns the same worktree
    assert again == infos[3]


async def test_commit_reports_stat_and_is_idempotent(acts: RepoActivities, source: Path) -> None:
    prepared = await prepare(acts, source)
    info = await worktree(acts, prepared, 0)
    path = Path(info.path)
    (path / "src" / "app.py").write_text("line 1\nline two\nline 3\nline 4\n")
    (path / "new.txt").write_text("a\nb\n")
    (path / "README.md").unlink()
    commit_input = CommitInput(
        worktree_path=info.path, base_commit=prepared.base_commit, message="subagent 0"
    )
    first = await run(acts.commit_worktree, commit_input)
    assert first.committed and first.head != prepared.base_commit
    assert sorted(first.diff_stat.files) == ["README.md", "new.txt", "src/app.py"]
    assert (first.diff_stat.files_changed, first.diff_stat.insertions) == (3, 4)
    assert first.diff_stat.deletions == 2  # "line 2" and README's one line
    assert git(path, "log", "-1", "--format=%an <%ae>|%s") == (
        "Switchboard Subagent <subagent@switchboard.local>|subagent 0"
    )
    retried = await run(acts.commit_worktree, commit_input)
    assert not retried.committed
    assert (retried.head, retried.diff_stat) == (first.head, first.diff_stat)


async def test_a_rename_counts_once_in_commit_and_diff(acts: RepoActivities, source: Path) -> None:
    prepared = await prepare(acts, source)
    info = await worktree(acts, prepared, 0)
    (Path(info.path) / "docs").mkdir()
    (Path(info.path) / "README.md").rename(Path(info.path) / "docs" / "README.md")
    commit = await run(
        acts.commit_worktree,
        CommitInput(worktree_path=info.path, base_commit=prepared.base_commit, message="move"),
    )
    assert commit.diff_stat.files == ["docs/README.md"]
    stat, patch, _ = diffs.read_diff(prepared.mirror_path, prepared.base_commit, info.branch)
    assert stat == commit.diff_stat and "rename to docs/README.md" in patch


async def test_worktree_recreated_from_branch_keeps_commits(
    acts: RepoActivities, source: Path
) -> None:
    prepared = await prepare(acts, source)
    branch = await work_on(acts, prepared, 2, {"kept.txt": "round 1\n"})
    head = git(Path(prepared.mirror_path), "rev-parse", branch)
    info = await worktree(acts, prepared, 2)
    shutil.rmtree(info.path)  # the host lost the directory

    again = await worktree(acts, prepared, 2)
    assert again.path == info.path and again.head == head != prepared.base_commit
    assert (Path(again.path) / "kept.txt").read_text() == "round 1\n"


async def test_commit_ignores_a_tampered_dot_git(
    acts: RepoActivities, source: Path, tmp_path: Path
) -> None:
    """A sandbox can rewrite the worktree's `.git`; the host must not run its config."""
    prepared = await prepare(acts, source)
    info = await worktree(acts, prepared, 0)
    path = Path(info.path)
    pwned = tmp_path / "pwned"
    (path / ".git").unlink()
    git(path, "init", "-q")  # a whole repository of the sandbox's making...
    git(path, "config", "core.fsmonitor", f"touch {pwned}")  # ...that runs a command
    (path / "work.txt").write_text("done\n")
    result = await run(
        acts.commit_worktree,
        CommitInput(worktree_path=info.path, base_commit=prepared.base_commit, message="m"),
    )
    assert result.committed and result.diff_stat.files == ["work.txt"]
    assert not pwned.exists()
    assert git(Path(prepared.mirror_path), "rev-parse", info.branch) == result.head


# ---- integration ---------------------------------------------------------------------------


async def test_integrate_three_branches_and_publish(acts: RepoActivities, source: Path) -> None:
    prepared = await prepare(acts, source)
    branches = [
        await work_on(acts, prepared, i, {f"part{i}/mod.py": f"x = {i}\n"}) for i in range(3)
    ]
    idle = (await worktree(acts, prepared, 3)).branch  # no commits: skipped

    preview = await run(acts.integrate_branches, integrate_input(prepared, [*branches, idle]))
    assert preview.result.merged and preview.result.branch == f"switchboard/{TASK}/merged"
    assert preview.stat.files == ["part0/mod.py", "part1/mod.py", "part2/mod.py"]
    assert wire.task_branch(TASK) not in git(source, "branch", "--list")

    outcome = await run(
        acts.integrate_branches, integrate_input(prepared, [*branches, idle], publish=True)
    )
    result = outcome.result
    assert result.merged and result.branch == wire.task_branch(TASK) and not result.pushed
    assert git(source, "rev-parse", result.branch) == result.commit
    files = git(source, "ls-tree", "-r", "--name-only", result.branch).splitlines()
    assert {"part0/mod.py", "part1/mod.py", "part2/mod.py", "README.md"} <= set(files)
    merges = git(source, "log", "--merges", "--format=%s", result.branch).splitlines()
    assert merges == [f"Merge {b}" for b in reversed(branches)]
    assert git(source, "branch", "--show-current") == "trunk"  # the user's checkout untouched
    assert not (Path(acts._settings.worktrees_dir) / TASK / _git.INTEGRATION_DIR).exists()


async def test_remote_is_pushed_only_when_asked(acts: RepoActivities, source: Path) -> None:
    prepared = await prepare(acts, f"file://{source}")
    assert not prepared.is_local and prepared.repo == f"file://{source}"
    branch = await work_on(acts, prepared, 0, {"remote.txt": "r\n"})

    kept = await run(acts.integrate_branches, integrate_input(prepared, [branch], publish=True))
    assert kept.result.merged and not kept.result.pushed
    assert kept.result.branch == f"switchboard/{TASK}/merged"
    assert wire.task_branch(TASK) not in git(source, "branch", "--list")

    pushed = await run(
        acts.integrate_branches, integrate_input(prepared, [branch], publish=True, push=True)
    )
    assert pushed.result.pushed and pushed.result.branch == wire.task_branch(TASK)
    assert git(source, "rev-parse", wire.task_branch(TASK)) == pushed.result.commit


async def test_publish_never_overwrites_a_branch_switchboard_did_not_write(
    acts: RepoActivities, source: Path
) -> None:
    target = wire.task_branch(TASK)
    git(source, "branch", target)  # the user's own branch under our name
    theirs = git(source, "rev-parse", target)
    local = await prepare(acts, source)
    branch = await work_on(acts, local, 0, {"ours.txt": "o\n"})

    kept = await run(acts.integrate_branches, integrate_input(local, [branch], publish=True))
    assert kept.result.merged and kept.result.branch == f"switchboard/{TASK}/merged"
    assert "Switchboard did not write: it was not overwritten" in kept.result.message
    assert git(source, "rev-parse", target) == theirs

    remote = await prepare(acts, f"file://{source}")
    pushed = await work_on(acts, remote, 2, {"pushed.txt": "p\n"})
    await expect_error(
        run(acts.integrate_branches, integrate_input(remote, [pushed], publish=True, push=True)),
        wire.Errors.INVALID_INPUT,
        retryable=False,
        contains=f"branch {target} already exists",
    )
    assert git(source, "rev-parse", target) == theirs

    # A branch Switchboard published itself is moved on by a retry or a later publish.
    git(source, "branch", "-D", target)
    first = await run(acts.integrate_branches, integrate_input(local, [branch], publish=True))
    later = await work_on(acts, local, 1, {"later.txt": "l\n"})
    again = await run(
        acts.integrate_branches, integrate_input(local, [branch, later], publish=True)
    )
    assert first.result.branch == again.result.branch == target
    assert git(source, "rev-parse", target) == again.result.commit != first.result.commit


async def test_conflict_is_reported_not_resolved(acts: RepoActivities, source: Path) -> None:
    prepared = await prepare(acts, source)
    ours = await work_on(acts, prepared, 0, {"src/app.py": "line 1\nOURS\nline 3\n"})
    theirs = await work_on(acts, prepared, 1, {"src/app.py": "line 1\nTHEIRS\nline 3\n"})

    outcome = await run(
        acts.integrate_branches, integrate_input(prepared, [ours, theirs], publish=True)
    )
    result = outcome.result
    assert not result.merged and result.commit is None
    assert result.conflicts == ["src/app.py"]
    assert theirs in result.message and "src/app.py" in result.message
    assert f"switchboard/{TASK}/merged" not in mirror_branches(prepared)
    assert wire.task_branch(TASK) not in git(source, "branch", "--list")
    integration = Path(acts._settings.worktrees_dir) / TASK / _git.INTEGRATION_DIR
    assert not integration.exists()
    assert "_integration" not in git(Path(prepared.mirror_path), "worktree", "list")


async def test_the_merges_share_one_sandbox_and_stop_at_the_first_conflict(
    acts: RepoActivities, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared = await prepare(acts, source)
    ours = await work_on(acts, prepared, 0, {"src/app.py": "line 1\nOURS\nline 3\n"})
    other = await work_on(acts, prepared, 1, {"docs/other.md": "other\n"})
    theirs = await work_on(acts, prepared, 2, {"src/app.py": "line 1\nTHEIRS\nline 3\n"})
    last = await work_on(acts, prepared, 3, {"docs/last.md": "last\n"})
    commands: list[list[str]] = []
    real_run = subprocess.run

    def counted(argv: list[str], *args: Any, **kwargs: Any) -> Any:
        commands.append([str(a) for a in argv])
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", counted)
    branches = [ours, other, theirs, last]
    outcome = await run(acts.integrate_branches, integrate_input(prepared, branches))
    monkeypatch.undo()

    result = outcome.result
    assert not result.merged and result.conflicts == ["src/app.py"]
    assert result.message.endswith(f"(merged before it: {ours}, {other})")
    assert theirs in result.message and last not in result.message
    merging = [c for c in commands if any("--no-ff" in a for a in c)]
    assert len(merging) == 1  # all merges in one (confined) command
    clean = await run(acts.integrate_branches, integrate_input(prepared, [ours, other, last]))
    assert clean.result.merged and clean.stat is not None
    assert sorted(clean.stat.files) == ["docs/last.md", "docs/other.md", "src/app.py"]


async def test_read_diff_truncates_patch_not_stat(acts: RepoActivities, source: Path) -> None:
    prepared = await prepare(acts, source)
    big = "".join(f"line {n} of a long file\n" for n in range(2000))
    branch = await work_on(acts, prepared, 0, {"big.txt": big, "small.txt": "s\n"})
    mirror, base = prepared.mirror_path, prepared.base_commit
    full_stat, full_patch, full_truncated = diffs.read_diff(mirror, base, branch)
    assert not full_truncated and "+line 1999 of a long file" in full_patch
    cut_stat, cut_patch, cut_truncated = diffs.read_diff(mirror, base, branch, max_bytes=1000)
    assert cut_truncated and len(cut_patch.encode()) <= 1000 and cut_patch.endswith("\n")
    assert cut_stat == full_stat and full_stat.insertions == 2001
    with pytest.raises(ValueError, match="no/such/branch"):
        diffs.read_diff(mirror, base, "no/such/branch")


# ---- cleanup --------------------------------------------------------------------------------


async def test_cleanup_removes_worktrees_and_branches(
    acts: RepoActivities, source: Path, settings: Settings
) -> None:
    prepared = await prepare(acts, source)
    for i in range(2):
        await work_on(acts, prepared, i, {f"f{i}.txt": "x\n"})
    task_dir = settings.worktrees_dir / TASK
    mirror = Path(prepared.mirror_path)

    await acts.cleanup_worktrees(CleanupInput(task_id=TASK, mirror_path=prepared.mirror_path))
    assert not task_dir.exists()
    assert git(mirror, "worktree", "list").count("\n") == 0  # only the bare mirror itself
    assert len(mirror_branches(prepared)) == 2  # kept without delete_branches

    cleanup = CleanupInput(task_id=TASK, mirror_path=prepared.mirror_path, delete_branches=True)
    await acts.cleanup_worktrees(cleanup)
    assert mirror_branches(prepared) == []
    await acts.cleanup_worktrees(cleanup)  # idempotent
    await acts.cleanup_worktrees(CleanupInput(task_id="task-never-existed"))


def test_reap_orphans(settings: Settings, source: Path) -> None:
    prepared = _git.prepare_mirror(settings, PrepareRepoInput(repo=str(source)))
    for task in ("task-live", "task-dead"):
        _git.create_worktree(
            settings,
            WorktreeInput(
                task_id=task,
                index=0,
                mirror_path=prepared.mirror_path,
                base_commit=prepared.base_commit,
                branch=wire.subagent_branch(task, 0),
            ),
        )
    assert _git.reap_orphans(settings, {"task-live"}) == ["task-dead"]
    assert (settings.worktrees_dir / "task-live" / "0").is_dir()
    assert not (settings.worktrees_dir / "task-dead").exists()
    listed = git(Path(prepared.mirror_path), "worktree", "list")
    assert "task-live" in listed and "task-dead" not in listed


async def test_long_operations_heartbeat(
    acts: RepoActivities, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(milliseconds=20))
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    fetch = _git.prepare_mirror

    def slow_fetch(settings: Settings, input: PrepareRepoInput) -> Any:
        threading.Event().wait(0.3)  # a fetch that outlasts several heartbeat intervals
        return fetch(settings, input)

    monkeypatch.setattr(_git, "prepare_mirror", slow_fetch)
    prepared = await env.run(acts.prepare_repo, PrepareRepoInput(repo=str(source)))
    assert prepared.base_commit == git(source, "rev-parse", "HEAD")
    assert beats


# ---- remotes that do not answer ---------------------------------------------------------


async def test_unreachable_remote_fails_at_once_and_is_not_retried(acts: RepoActivities) -> None:
    started = time.monotonic()
    await expect_error(
        prepare(acts, "ssh://git@127.0.0.1:1/org/repo.git"),
        wire.Errors.REPO_UNREACHABLE,
        retryable=False,
        contains="could not connect to 127.0.0.1:1",
    )
    await expect_error(
        prepare(acts, "git@no-such-host.invalid:org/repo.git"),
        wire.Errors.REPO_UNREACHABLE,
        retryable=False,
        contains="'no-such-host.invalid' does not resolve",
    )
    assert time.monotonic() - started < 5


def test_a_host_that_does_not_answer_is_given_up_on_quickly() -> None:
    started = time.monotonic()
    # 192.0.2.0/24 is TEST-NET-1: nothing answers (or the network says unreachable).
    reason = unreachable_reason("git://192.0.2.1/org/repo.git", timeout=0.5)
    assert reason is not None and "192.0.2.1" in reason
    assert time.monotonic() - started < 3
    assert unreachable_reason("https://192.0.2.1/org/repo.git") is None  # left to git
    assert unreachable_reason("/srv/repo") is None


# ---- no worktree outlives its task's cleanup (a cancel racing a checkout) -------------


async def _cleanup(acts: RepoActivities, prepared: PreparedRepo, settings: Settings) -> None:
    """What `cleanup_task` does to git: mark the task ended, then remove its worktrees."""
    mark_task_ended(settings.transcripts_dir, TASK)
    await acts.cleanup_worktrees(CleanupInput(task_id=TASK, mirror_path=prepared.mirror_path))


def _assert_no_worktree(prepared: PreparedRepo, settings: Settings) -> None:
    assert not (settings.worktrees_dir / TASK).exists()
    listed = git(Path(prepared.mirror_path), "worktree", "list")
    assert listed.count("\n") == 0, listed  # only the bare mirror itself


async def test_a_checkout_after_its_task_was_cleaned_up_is_refused_and_leaves_nothing(
    acts: RepoActivities, source: Path, settings: Settings
) -> None:
    prepared = await prepare(acts, source)
    await _cleanup(acts, prepared, settings)
    await expect_error(
        worktree(acts, prepared, 1001), wire.Errors.WRONG_PHASE, retryable=False, contains="ended"
    )
    _assert_no_worktree(prepared, settings)


def _held_checkout(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[threading.Event, threading.Event, threading.Event]:
    """The real checkout, held on its thread until `release` is set; `finished` is set
    when the checkout has returned."""
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    real = _git.create_worktree

    def held(settings: Settings, input: WorktreeInput) -> WorktreeInfo:
        started.set()
        release.wait(30)
        try:
            return real(settings, input)
        finally:
            finished.set()

    monkeypatch.setattr(_git, "create_worktree", held)
    return started, release, finished


@pytest.mark.parametrize("cancelled", [False, True], ids=["finishes", "cancelled"])
async def test_a_checkout_still_running_when_the_cleanup_ran_removes_itself(
    acts: RepoActivities,
    source: Path,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    cancelled: bool,
) -> None:
    """The task is cancelled while a subagent's checkout runs on a worker thread: the
    cleanup runs first (the workflow does not wait for a cancelled activity), the
    checkout finishes later. Nothing of it may be left, cancelled activity or not."""
    prepared = await prepare(acts, source)
    started, release, finished = _held_checkout(monkeypatch)
    env = ActivityEnvironment()
    checkout = asyncio.ensure_future(
        env.run(
            acts.create_worktree,
            WorktreeInput(
                task_id=TASK,
                index=1001,
                mirror_path=prepared.mirror_path,
                base_commit=prepared.base_commit,
                branch=wire.subagent_branch(TASK, 1001),
            ),
        )
    )
    assert await asyncio.to_thread(started.wait, 30)
    if cancelled:
        env.cancel()
        await asyncio.sleep(0.1)
    await _cleanup(acts, prepared, settings)
    release.set()
    with pytest.raises((ApplicationError, asyncio.CancelledError)):
        await checkout
    assert await asyncio.to_thread(finished.wait, 30)  # the thread has done its work
    _assert_no_worktree(prepared, settings)
