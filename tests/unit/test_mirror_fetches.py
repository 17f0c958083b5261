"""A burst of tasks on one repository shares a fetch, never across credentials."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from activities import _git, _mirror
from activities._git_util import flock
from switchboard.contracts import PrepareRepoInput
from switchboard.settings import Settings
from testkit import git


def _source(tmp_path: Path) -> Path:
    repo = tmp_path / "user-repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "trunk")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "T")
    _commit(repo, "one")
    return repo


def _commit(repo: Path, text: str) -> str:
    (repo / "file.txt").write_text(text)
    git(repo, "add", "file.txt")
    git(repo, "commit", "-q", "-m", text)
    return git(repo, "rev-parse", "HEAD")


def test_a_fetch_that_began_after_the_call_arrived_is_taken(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", host_id="test-host")
    source = _source(tmp_path)
    first = _git.prepare_mirror(settings, PrepareRepoInput(repo=str(source)))
    mirror = Path(first.mirror_path)
    moved = _commit(source, "two")
    # Another call's fetch (same credentials: none) began after this call arrived.
    _mirror._FETCHED[mirror] = (time.monotonic() + 3600, _mirror._fingerprint(None, None))
    again = _git.prepare_mirror(settings, PrepareRepoInput(repo=str(source)))
    assert again.base_commit == first.base_commit != moved
    # One with other credentials proves nothing: this call fetches for itself.
    _mirror._FETCHED[mirror] = (time.monotonic() + 3600, _mirror._fingerprint("u", "token"))
    fresh = _git.prepare_mirror(settings, PrepareRepoInput(repo=str(source)))
    assert fresh.base_commit == moved


def test_calls_waiting_on_the_lock_share_the_next_fetch(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", host_id="test-host")
    source = _source(tmp_path)
    mirror = Path(_git.prepare_mirror(settings, PrepareRepoInput(repo=str(source))).mirror_path)
    moved = _commit(source, "two")
    fetches_before = _mirror._FETCHED[mirror][0]
    results: list[str] = []
    with flock(mirror.with_suffix(".lock")):  # a fetch in progress elsewhere
        threads = [
            threading.Thread(
                target=lambda: results.append(
                    _git.prepare_mirror(settings, PrepareRepoInput(repo=str(source))).base_commit
                )
            )
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
    for thread in threads:
        thread.join()
    # Every call sees the new commit: none took a fetch older than its own arrival.
    assert results == [moved] * 3
    assert _mirror._FETCHED[mirror][0] > fetches_before
