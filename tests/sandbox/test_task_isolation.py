"""Isolation between tasks (issue #10): a sandbox cannot reach another task's work.

Two tasks of one repository are prepared by the real repository functions, each
in its own repository borrowing the mirror's objects. Task A commits a secret
(and leaves a dangling object, as a checkpoint or an aborted merge would); then
a sandbox of task B, on each backend, tries every way git offers to find it —
refs, reflogs, `cat-file` by id, `--batch-all-objects`, `fsck --lost-found`,
`log --all`, another `--git-dir` — and plain reads of the mirror and the data
directory. A positive control (B's own base commit) keeps the test honest.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from activities import _git
from activities.sandbox import Sandbox, SandboxUnavailable
from switchboard.contracts import (
    CommitInput,
    PreparedRepo,
    PrepareRepoInput,
    SandboxSpec,
    WorktreeInput,
)
from switchboard.models import Role
from switchboard.settings import Settings
from switchboard.wire import subagent_branch
from tests.sandbox.conftest import BACKENDS, make_backend
from tests.sandbox.helpers import git

SECRET = "the-other-tasks-secret-7f3a"


def prepare(settings: Settings, source: Path, task_id: str) -> tuple[PreparedRepo, Path]:
    prepared = _git.prepare_mirror(settings, PrepareRepoInput(repo=str(source), task_id=task_id))
    info = _git.create_worktree(
        settings,
        WorktreeInput(
            task_id=task_id,
            index=1,
            mirror_path=prepared.mirror_path,
            base_commit=prepared.base_commit,
            branch=subagent_branch(task_id, 1),
        ),
    )
    return prepared, Path(info.path)


def has_object(repo: str | Path, sha: str) -> bool:
    done = subprocess.run(["git", "-C", str(repo), "cat-file", "-e", sha], capture_output=True)
    return done.returncode == 0


def probe_script(mirror: Path, other_repo: Path, data_dir: Path, shas: list[str]) -> str:
    """Every way in. Probes that name what they look for print only `LEAK <how>` on
    success; the others print everything they find, for the test to search."""
    named = [
        *(f"git cat-file -e {sha}" for sha in shas),
        *(f"git --git-dir={other_repo} cat-file -e {sha}" for sha in shas),
        *(f"test -e {mirror}/objects/{sha[:2]}/{sha[2:]}" for sha in shas),
        f"test -e {other_repo}",
        f"git --git-dir={other_repo} for-each-ref | grep -q .",
        f"test -e {mirror}/refs",
        f"test -e {mirror}/config",
        f"git --git-dir={mirror} for-each-ref | grep -q .",
    ]
    leaks = "\n".join(f"( {probe} ) >/dev/null 2>&1 && echo 'LEAK {probe}'" for probe in named)
    return f"""
git for-each-ref
git reflog --all
git log --all --format=%H%n%B
git cat-file --batch-all-objects --batch-check
git cat-file --batch-all-objects --batch | head -c 200000
git fsck --lost-found --no-reflogs --unreachable --dangling
cat "$(git rev-parse --git-common-dir)"/lost-found/*/* 2>&1
{leaks}
find {data_dir} 2>&1
grep -ra {SECRET} {data_dir} 2>&1 | head -c 2000
for f in $(find {data_dir} -type f 2>/dev/null); do
  git cat-file -p "$(basename "$(dirname "$f")")$(basename "$f")" 2>/dev/null
done
echo PROBE-DONE
"""


@pytest.mark.parametrize("backend_name", BACKENDS)
async def test_a_sandbox_cannot_reach_another_tasks_work(
    backend_name: str, settings: Settings, tmp_path: Path
) -> None:
    try:
        backend: Sandbox = make_backend(backend_name, settings)
    except SandboxUnavailable as exc:
        pytest.skip(f"{backend_name} sandbox unavailable here: {exc}")
    source = tmp_path / "source"
    source.mkdir()
    (source / "README.md").write_text("# demo\n")
    git(source, "init", "-q", "-b", "main")
    git(source, "add", ".")
    git(source, "commit", "-q", "-m", "initial")
    suffix = uuid.uuid4().hex[:8]
    task_a, task_b = f"task-a{suffix}", f"task-b{suffix}"
    prepared_a, tree_a = prepare(settings, source, task_a)
    prepared_b, tree_b = prepare(settings, source, task_b)
    repo_a, repo_b = Path(prepared_a.mirror_path), Path(prepared_b.mirror_path)
    mirror = _git.mirror_path_for(settings.mirrors_dir.resolve(), str(source))
    assert repo_a != repo_b and mirror not in (repo_a, repo_b)

    (tree_a / "secret.txt").write_text(f"{SECRET}\n")
    commit_a = _git.commit_worktree(
        settings,
        CommitInput(worktree_path=str(tree_a), base_commit=prepared_a.base_commit, message="a"),
    ).head
    dangling = git(repo_a, "hash-object", "-w", "--stdin", input_text=f"{SECRET} dangling\n")
    blob = git(repo_a, "rev-parse", f"{commit_a}:secret.txt")
    shas = [commit_a, dangling, blob]
    # The host side: A's work is in A's repository only, never in the mirror or B's.
    assert has_object(repo_a, commit_a)
    assert not any(has_object(mirror, s) or has_object(repo_b, s) for s in shas)

    spec = SandboxSpec(
        sandbox_id=f"{task_b}-1",
        worktree_path=str(tree_b),
        role=Role.WORKER,
        mirror_path=str(repo_b),
    )
    await backend.start(spec)
    try:
        script = probe_script(mirror, repo_a, settings.data_dir.resolve(), shas)
        result = await backend.exec(
            spec, ["sh", "-c", script], timeout=60, output_limit=1 << 20, merge_stderr=True
        )
        control = await backend.exec(
            spec,
            ["git", "cat-file", "-t", prepared_b.base_commit],
            timeout=30,
            output_limit=4096,
        )
    finally:
        await backend.remove_task(task_b)
    seen = result.stdout
    assert "PROBE-DONE" in seen and not result.truncated, seen[-2000:]
    assert control.stdout.strip() == "commit", control  # B's own history is readable
    assert prepared_b.base_commit in seen  # ...and the probes really listed objects
    assert "LEAK" not in seen, seen
    for found in (SECRET, *shas, task_a):
        assert found not in seen, f"{found} reachable from task B's sandbox:\n{seen[-4000:]}"

    # B's host-side commit lands in B's repository only.
    (tree_b / "b.txt").write_text("b\n")
    commit_b = _git.commit_worktree(
        settings,
        CommitInput(worktree_path=str(tree_b), base_commit=prepared_b.base_commit, message="b"),
    ).head
    assert has_object(repo_b, commit_b)
    assert not has_object(mirror, commit_b) and not has_object(repo_a, commit_b)


def test_cleanup_removes_a_rejected_tasks_repository_and_keeps_a_finished_one(
    settings: Settings, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "README.md").write_text("# demo\n")
    git(source, "init", "-q", "-b", "main")
    git(source, "add", ".")
    git(source, "commit", "-q", "-m", "initial")
    mirror = _git.mirror_path_for(settings.mirrors_dir.resolve(), str(source))
    kept, _ = prepare(settings, source, "task-kept")
    gone, _ = prepare(settings, source, "task-gone")
    # Creating a task's repository copies no object: it borrows the mirror's.
    assert not any((Path(gone.mirror_path) / "objects").glob("??/*"))
    pins = git(mirror, "for-each-ref", "--format=%(refname)", "refs/switchboard-bases/")
    assert pins.split() == ["refs/switchboard-bases/task-gone", "refs/switchboard-bases/task-kept"]

    _git.remove_task_worktrees(settings, "task-kept", kept.mirror_path, delete_branches=False)
    _git.remove_task_worktrees(settings, "task-gone", gone.mirror_path, delete_branches=True)

    assert (Path(kept.mirror_path) / "HEAD").is_file()
    assert git(kept.mirror_path, "branch", "--list").strip()  # its branch is still there
    assert not Path(gone.mirror_path).exists()
    pins = git(mirror, "for-each-ref", "--format=%(refname)", "refs/switchboard-bases/")
    assert pins.split() == ["refs/switchboard-bases/task-kept"]
