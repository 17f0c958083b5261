"""Subagent commits leave build litter out, even in a repository without a .gitignore."""

from __future__ import annotations

from pathlib import Path

from activities._excludes import DEFAULT_EXCLUDES, default_excludes_file
from activities.repo import RepoActivities
from switchboard.contracts import CommitInput
from switchboard.settings import Settings
from tests.unit.test_repo import commit_file, git, prepare, run, worktree


async def test_a_commit_leaves_build_litter_out(tmp_path: Path) -> None:
    source = tmp_path / "user-repo"
    source.mkdir()
    git(source, "init", "-q", "-b", "trunk")
    commit_file(source, "src/app.py", "print('hi')\n")
    assert not (source / ".gitignore").exists()
    acts = RepoActivities(Settings(data_dir=tmp_path / "data", host_id="test-host"))
    prepared = await prepare(acts, source)
    info = await worktree(acts, prepared, 0)
    path = Path(info.path)
    litter = [
        "src/__pycache__/app.cpython-311.pyc",
        ".pytest_cache/v/cache/lastfailed",
        "node_modules/left-pad/index.js",
        "pkg.egg-info/PKG-INFO",
    ]
    for name in [*litter, "src/new.py"]:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("x\n")

    result = await run(
        acts.commit_worktree,
        CommitInput(worktree_path=info.path, base_commit=prepared.base_commit, message="m"),
    )

    assert result.committed
    assert result.diff_stat.files == ["src/new.py"]
    committed = git(path, "ls-tree", "-r", "--name-only", "HEAD").splitlines()
    assert sorted(committed) == ["src/app.py", "src/new.py"]


def test_the_excludes_file_is_written_once_and_repaired(tmp_path: Path) -> None:
    path = default_excludes_file(tmp_path)
    assert path.read_text().splitlines() == list(DEFAULT_EXCLUDES)
    path.write_text("tampered\n")
    assert default_excludes_file(tmp_path).read_text().splitlines() == list(DEFAULT_EXCLUDES)
