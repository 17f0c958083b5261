"""B5 — big repositories: six subagents' worktrees and sandboxes on a ~50,000-file repo.

Switchboard (the `create_worktree` code + sandbox start with a first command, six
at once, as a task's subagents start) against six plain `git worktree add` from the
same mirror, and six full clones (`git clone --no-hardlinks`: an independent copy
each, as from a remote). Disk use per subagent is what each leaves on disk: the
checkout plus, for worktrees, its index and admin files in the mirror.

    python -m bench.big_repo [--quick]
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from activities.sandbox import Sandbox, select_backend
from bench import _worktrees
from bench._env import mib, workdir
from bench._report import TIMES, Options, Report, Row, run_main
from bench._tasks import new_task_id
from bench._worktrees import (
    Handoff,
    big_repo,
    disk_bytes,
    full_clone,
    host_settings,
    plain_worktree,
    prepare,
    remove_plain_worktrees,
    remove_switchboard_worktrees,
    switchboard_worktree,
    timed,
    warm,
    worktree_admin_dir,
)
from switchboard.contracts import PreparedRepo, SandboxSpec, WorktreeInfo
from switchboard.models import Role
from switchboard.settings import Settings

SUBAGENTS = 6
TARGET = 1.3


@dataclass
class Side:
    wall: float
    disk_per_subagent: int


async def _switchboard(
    settings: Settings, prepared: PreparedRepo, box: Sandbox, plain_wall: float, keep: bool
) -> tuple[Side, str]:
    task_id = new_task_id()

    async def one(index: int) -> WorktreeInfo:
        info = await switchboard_worktree(settings, prepared, task_id, index)
        spec = SandboxSpec(
            sandbox_id=f"{task_id}-{index}",
            worktree_path=info.path,
            role=Role.WORKER,
            mirror_path=prepared.mirror_path,
        )
        await box.start(spec)
        await box.exec(spec, ["true"], timeout=60, output_limit=4096)
        return info

    try:
        infos, wall = await timed([one(i) for i in range(1, SUBAGENTS + 1)])
        first = Path(infos[0].path)
        disk = disk_bytes(first, worktree_admin_dir(prepared.mirror_path, first))
        if keep:
            _worktrees.HANDOFF.append(Handoff(settings, prepared, task_id, infos, plain_wall))
    finally:
        await box.remove_task(task_id)
        if not keep:
            await asyncio.to_thread(remove_switchboard_worktrees, settings, prepared, task_id)
    return Side(wall, disk), task_id


async def run(options: Options) -> Report:
    with workdir("big-repo") as scratch:
        repo = big_repo(options.quick, scratch)
        settings = host_settings(options.quick, scratch)
        prepared, mirror_seconds = await asyncio.to_thread(prepare, settings, repo)
        await asyncio.to_thread(warm, prepared.mirror_path)
        box = select_backend(settings)
        files = len(
            subprocess.run(
                [
                    "git",
                    "-C",
                    prepared.mirror_path,
                    "ls-tree",
                    "-r",
                    "--name-only",
                    prepared.base_commit,
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.splitlines()
        )
        commits = subprocess.run(
            ["git", "-C", prepared.mirror_path, "rev-list", "--count", prepared.base_commit],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

        paths = [scratch / f"plain-{i}" for i in range(SUBAGENTS)]
        _, plain_wall = await timed(
            [plain_worktree(prepared.mirror_path, prepared.base_commit, p) for p in paths]
        )
        plain = Side(
            plain_wall, disk_bytes(paths[0], worktree_admin_dir(prepared.mirror_path, paths[0]))
        )
        await asyncio.to_thread(remove_plain_worktrees, prepared.mirror_path, paths)

        keep = _worktrees.KEEP_FOR_SANDBOX_START and not options.quick
        switchboard, _ = await _switchboard(settings, prepared, box, plain_wall, keep)

        clones = [scratch / f"clone-{i}" for i in range(SUBAGENTS)]
        _, clone_wall = await timed([full_clone(repo, c) for c in clones])
        cloned = Side(clone_wall, disk_bytes(clones[0]))
        for c in clones:
            await asyncio.to_thread(shutil.rmtree, c, True)
        mirror_disk = disk_bytes(Path(prepared.mirror_path))
    return _report(
        switchboard, plain, cloned, box.name, files, commits, (mirror_seconds, mirror_disk), options
    )


def _report(
    sb: Side,
    plain: Side,
    clone: Side,
    backend: str,
    files: int,
    commits: str,
    mirror: tuple[float, int],
    options: Options,
) -> Report:
    """`mirror`: seconds to build the repository's mirror, and its size on disk."""
    mirror_seconds, mirror_disk = mirror
    ratio = sb.wall / plain.wall
    rows = [
        Row(
            f"B5 big repo: {SUBAGENTS} worktrees + sandboxes vs plain worktrees",
            f"{sb.wall:.1f} s",
            f"{plain.wall:.1f} s",
            ratio,
            f"≤ {TARGET}{TIMES}",
            ratio <= TARGET,
        ),
        Row(
            f"B5 big repo: {SUBAGENTS} worktrees + sandboxes vs full clones",
            f"{sb.wall:.1f} s",
            f"{clone.wall:.1f} s",
            sb.wall / clone.wall,
            "info",
            None,
        ),
        Row(
            "B5 big repo: disk per subagent (worktree vs clone)",
            mib(sb.disk_per_subagent),
            mib(clone.disk_per_subagent),
            sb.disk_per_subagent / clone.disk_per_subagent,
            "info",
            None,
        ),
    ]
    lines = [
        f"Repository: {files:,} files at the base commit, {commits} commits "
        f"(`bench.make_big_repo`). The mirror is made once per host ({mirror_seconds:.0f} s "
        f"when new; {mib(mirror_disk)} on disk, shared by every task). Sandbox: {backend}. "
        f"All {SUBAGENTS} of each kind run at once, as a task's subagents do.",
        "",
        "| | Six, wall (s) | Per subagent (s) | Disk per subagent |",
        "|---|---|---|---|",
        f"| Switchboard: worktree + sandbox start + first command | {sb.wall:.1f} | "
        f"{sb.wall / SUBAGENTS:.2f} | {mib(sb.disk_per_subagent)} |",
        f"| plain `git worktree add` | {plain.wall:.1f} | {plain.wall / SUBAGENTS:.2f} | "
        f"{mib(plain.disk_per_subagent)} |",
        f"| full clone (`--no-hardlinks`) | {clone.wall:.1f} | {clone.wall / SUBAGENTS:.2f} | "
        f"{mib(clone.disk_per_subagent)} |",
        "",
        "A worktree is a full checkout: its cost is writing every file of the tree, "
        "which on this machine's disk varies several-fold from minute to minute "
        "(single `git worktree add` of the same commit measured between 5 s and 25 s, "
        "nearly all of it kernel time). The ratio against plain worktrees, measured "
        "back to back, is the figure to read. Cutting it further means checking out "
        "less: `git worktree add --no-checkout` plus a sparse checkout of the paths a "
        "subtask needs.",
    ]
    notes = ["--quick: a small repository; not a measurement"] if options.quick else []
    return Report(
        key="big_repo",
        title="B5 — big repositories",
        rows=rows,
        details="\n".join(lines),
        notes=notes,
    )


def main() -> None:
    run_main(run, "B5 — big repositories")


if __name__ == "__main__":
    main()
