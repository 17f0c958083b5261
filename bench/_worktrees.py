"""Worktrees on the large repository: Switchboard's, plain ones, full clones, disk use.

Shared by B5 (`bench.big_repo`) and the sandbox-start benchmark. The mirror is made
by Switchboard's own `prepare_mirror` once and cached beside the repository, like a
worker host keeps it; what is timed is the per-subagent part.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from activities import _git
from bench._env import CACHE_DIR, bench_settings
from bench.make_big_repo import ensure_big_repo
from switchboard.contracts import PreparedRepo, PrepareRepoInput, WorktreeInfo, WorktreeInput
from switchboard.settings import Settings
from switchboard.wire import subagent_branch

T = TypeVar("T")


@dataclass
class Handoff:
    """Six Switchboard worktrees B5 made and left for the sandbox-start benchmark."""

    settings: Settings
    prepared: PreparedRepo
    task_id: str
    worktrees: list[WorktreeInfo]
    plain_wall: float
    """Seconds B5 measured for six plain `git worktree add` of the same commit."""


HANDOFF: list[Handoff] = []
KEEP_FOR_SANDBOX_START = False
"""Set by `python -m bench` when both run: saves making six large checkouts twice."""
QUICK_FILES = 200
QUICK_COMMITS = 20


def big_repo(quick: bool, scratch: Path) -> Path:
    """The large cached repository, or a small one in `scratch` for --quick runs."""
    if quick:
        return ensure_big_repo(QUICK_FILES, QUICK_COMMITS, scratch / "small-repo.git", log=False)
    return ensure_big_repo()


def host_settings(quick: bool, scratch: Path) -> Settings:
    """A worker host's settings; the full run keeps its mirror in the bench cache."""
    data = scratch / "data" if quick else CACHE_DIR / "host"
    return bench_settings(data.parent, "127.0.0.1:7233", 0, data_dir=data)


def prepare(settings: Settings, repo: Path) -> tuple[PreparedRepo, float]:
    """Switchboard's mirror of `repo` (fetched now if new); returns it and the seconds taken.

    Worktrees an interrupted earlier run left behind are removed first.
    """
    _git.reap_orphans(settings, {h.task_id for h in HANDOFF})
    started = time.monotonic()
    prepared = _git.prepare_mirror(settings, PrepareRepoInput(repo=str(repo)))
    return prepared, time.monotonic() - started


async def timed(jobs: list[Awaitable[T]]) -> tuple[list[T], float]:
    """Await the jobs together (as a task's subagents start together); wall seconds."""
    started = time.monotonic()
    results = await asyncio.gather(*jobs)
    return list(results), time.monotonic() - started


async def switchboard_worktree(
    settings: Settings, prepared: PreparedRepo, task_id: str, index: int
) -> WorktreeInfo:
    """What the `create_worktree` activity does, on a thread as the activity runs it."""
    return await asyncio.to_thread(
        _git.create_worktree,
        settings,
        WorktreeInput(
            task_id=task_id,
            index=index,
            mirror_path=prepared.mirror_path,
            base_commit=prepared.base_commit,
            branch=subagent_branch(task_id, index),
        ),
    )


async def plain_worktree(mirror: str, commit: str, path: Path) -> None:
    # Concurrent `git worktree add`s on one repository race on git's worktree
    # bookkeeping ("failed to read worktrees/<x>/commondir"); Switchboard's activity
    # is retried by Temporal, so the baseline retries too, the same way.
    for attempt in range(3):
        try:
            await _run(
                "git", "-C", mirror, "worktree", "add", "--quiet", "--detach", str(path), commit
            )
            return
        except RuntimeError as exc:
            if attempt == 2 or "worktrees/" not in str(exc):
                raise
            shutil.rmtree(path, ignore_errors=True)
            await _run("git", "-C", mirror, "worktree", "prune")


async def full_clone(source: Path, path: Path) -> None:
    # --no-hardlinks: an independent copy, as each subagent would get from a remote.
    await _run("git", "clone", "--quiet", "--no-hardlinks", str(source), str(path))


def remove_plain_worktrees(mirror: str, paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
    subprocess.run(["git", "-C", mirror, "worktree", "prune"], check=True)


def remove_switchboard_worktrees(settings: Settings, prepared: PreparedRepo, task_id: str) -> None:
    _git.remove_task_worktrees(settings, task_id, prepared.mirror_path, delete_branches=True)


def disk_bytes(*paths: Path) -> int:
    """Blocks used on disk (`du`), hard links counted once."""
    existing = [str(p) for p in paths if p.exists()]
    if not existing:
        return 0
    out = subprocess.run(
        ["du", "-skc", *existing], check=True, capture_output=True, text=True
    ).stdout
    return int(out.splitlines()[-1].split()[0]) * 1024


def worktree_admin_dir(mirror: str, worktree: Path) -> Path:
    """The mirror-side admin directory of a worktree (its index lives there)."""
    hint = (worktree / ".git").read_text().strip().removeprefix("gitdir:").strip()
    return Path(hint)


def warm(mirror: str) -> None:
    """Read every object once, so the first timed run does not pay for a cold page cache."""
    subprocess.run(
        ["git", "-C", mirror, "cat-file", "--batch-all-objects", "--batch-check"],
        check=True,
        capture_output=True,
    )


async def _run(*argv: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed: {err.decode(errors='replace')}")
