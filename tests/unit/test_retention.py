"""Nothing left behind: an ended task's stored credentials go with its cleanup, and its
repository after `task_retention_hours`, through the real cleanup and maintenance
activities on real git repositories (docs/security.md, "Isolation between tasks")."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities import _git
from activities.lifecycle import LifecycleActivities
from activities.maintenance import MaintenanceActivities
from activities.repo import RepoActivities, mark_orphan_task_repos
from activities.sandbox import BwrapSandbox, SandboxUnavailable
from switchboard.contracts import CleanupInput, GcMirrorsInput, PrepareRepoInput
from switchboard.credentials import CredentialStore
from switchboard.settings import Settings

URL = "https://user:tok3n@git.example.invalid/team/repo.git"
HOUR = 3600.0


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=u", "-c", "user.email=u@x", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_credentials_live_as_long_as_a_task_holds_them(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "credentials")
    bare, ref = store.put(URL, "task-a")
    assert ref is not None and store.put(URL, "task-b") == (bare, ref)  # same URL and token
    assert store.release("task-a") == []  # task-b still holds them
    assert store.get(ref, bare) == ("user", "tok3n")
    assert store.release("task-b") == [ref]
    assert store.get(ref, bare) is None
    assert not (tmp_path / "credentials" / ref).exists()
    assert store.release("task-b") == []  # idempotent
    # A retried start after the end claims them again; its release deletes them again.
    store.put(URL, "task-b")
    assert store.release("task-b") == [ref]


def test_the_sweep_takes_only_unheld_credentials_past_the_retention(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "credentials")
    _, legacy = store.put(URL)  # stored before tasks held references: no claim
    _, held = store.put(URL.replace("tok3n", "other"), "task-live")
    assert legacy is not None and held is not None
    assert store.sweep(HOUR) == []  # young
    age(tmp_path / "credentials" / legacy, 2 * HOUR)
    age(tmp_path / "credentials" / held, 2 * HOUR)
    assert store.sweep(HOUR) == [legacy]
    assert (tmp_path / "credentials" / held).is_file()


def test_claims_of_tasks_that_ended_unseen_are_released_at_worker_start(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "credentials")
    _, gone = store.put(URL, "task-terminated")
    _, live = store.put(URL.replace("tok3n", "live"), "task-live")
    listed_at = time.time() + 1  # the claims above were made before the listing
    _, starting = store.put(URL.replace("tok3n", "new"), "task-starting")
    age(tmp_path / "credentials" / f"{starting}.tasks" / "task-starting", -60)
    assert store.release_orphans({"task-live"}, listed_at) == [gone]
    assert {p.name for p in (tmp_path / "credentials").glob("cred-*") if p.is_file()} == {
        live,
        starting,
    }


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", host_id="retention-host", _env_file=None, sandbox="bwrap"
    )


def prepared(settings: Settings, source: Path, task_id: str) -> Path:
    info = _git.prepare_mirror(settings, PrepareRepoInput(repo=str(source), task_id=task_id))
    return Path(info.mirror_path)


async def test_an_ended_task_leaves_nothing_past_its_retention(
    settings: Settings, tmp_path: Path
) -> None:
    try:
        sandbox = BwrapSandbox(settings)
    except SandboxUnavailable as exc:
        pytest.skip(f"no bubblewrap here: {exc}")
    source = tmp_path / "source"
    source.mkdir()
    git(source, "init", "-q", "-b", "main")
    (source / "f").write_text("x\n")
    git(source, "add", "f")
    git(source, "commit", "-qm", "one")
    ended_repo = prepared(settings, source, "task-ended")
    live_repo = prepared(settings, source, "task-live")
    mirror = next(settings.mirrors_dir.glob("*.git"))
    store = CredentialStore(settings.credentials_dir)
    _, ref = store.put(URL.replace("tok3n", "ended"), "task-ended")
    _, live_ref = store.put(URL, "task-live")
    cleanup = LifecycleActivities(RepoActivities(settings), sandbox).cleanup_task
    gc = MaintenanceActivities(settings.model_copy(update={"task_retention_hours": 1.0}))
    env = ActivityEnvironment()

    # The task completes: its repository stays (branches, diff), its credentials go.
    await env.run(cleanup, CleanupInput(task_id="task-ended", mirror_path=str(ended_repo)))
    assert ended_repo.is_dir() and not (settings.credentials_dir / str(ref)).exists()
    assert (settings.credentials_dir / str(live_ref)).is_file()
    kept = await env.run(gc.gc_mirrors, GcMirrorsInput(host_queue="q"))
    assert kept.task_repos_removed == 0 and ended_repo.is_dir()

    # Past the retention, the maintenance run removes it and unpins its base.
    age(ended_repo / "switchboard-ended", 2 * HOUR)
    done = await env.run(gc.gc_mirrors, GcMirrorsInput(host_queue="q"))
    assert done.task_repos_removed == 1 and done.mirrors == 1
    assert not ended_repo.exists()
    pins = git(mirror, "for-each-ref", "--format=%(refname)", "refs/switchboard-bases/")
    assert pins.splitlines() == ["refs/switchboard-bases/task-live"]
    assert live_repo.is_dir() and (settings.credentials_dir / str(live_ref)).is_file()


def test_a_task_that_ended_without_its_cleanup_is_marked_at_worker_start(
    settings: Settings, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    git(source, "init", "-q", "-b", "main")
    git(source, "commit", "-q", "--allow-empty", "-m", "one")
    terminated = prepared(settings, source, "task-terminated")
    live = prepared(settings, source, "task-live")
    listed_at = time.time() + 1
    started_since = prepared(settings, source, "task-started-since")
    age(started_since / "HEAD", -60)

    marked = mark_orphan_task_repos(settings, {"task-live"}, listed_at)

    assert marked == ["task-terminated"]
    assert (terminated / "switchboard-ended").is_file()
    assert not (live / "switchboard-ended").exists()
    assert not (started_since / "switchboard-ended").exists()
