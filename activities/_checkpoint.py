"""Worktree checkpoints: a tree snapshot taken before a tool call that may write.

A retried step must never double a write: a call the crash interrupted is not run
again; its worktree goes back to the snapshot taken just before it (see
`activities/step.py`). A snapshot is a git tree written into the mirror's object
store through a private index file of the subagent, so the worktree's own index
and branch are never touched.

Everything in the worktree was written by a subagent and is hostile input, so git
runs here with every configuration source but the repository's own (written by
us) neutralised: no system or global config, an explicit `--git-dir` and
`--work-tree` (the worktree's `.git` file is ignored), no hooks, no fsmonitor,
no submodule recursion, and a minimal environment. And it runs confined like the
commit (`activities._git_env`): in bubblewrap, no network, only the repository's
`objects` and the private index's own directory writable (and the worktree, for a
restore). Files git ignores (by the repository's `.gitignore` or the default
excludes) are neither saved nor restored.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from activities._git_env import borrowed_objects, confined_prefix
from activities.sandbox import forget_hand_over

GIT_TIMEOUT_SECONDS = 300.0
# Both git commands of a take, or of a restore, in one sandbox ($1: the tree to
# restore, then the pathspecs leaving nested repositories out).
_TAKE = 'shift; git add --all -- . "$@" && git write-tree'
_RESTORE = 'tree=$1; shift; git add --all -- . "$@" && git read-tree --reset -u "$tree"'


class CheckpointError(RuntimeError):
    """Git could not snapshot or restore the worktree."""


def _confined_env(mirror: Path, work_tree: Path, index: Path, excludes: Path) -> dict[str, str]:
    settings = {
        "core.hooksPath": os.devnull,
        "core.fsmonitor": "false",
        "core.untrackedCache": "false",
        "core.excludesFile": str(excludes),
        "core.attributesFile": os.devnull,
        "submodule.recurse": "false",
        "safe.directory": str(work_tree),
        "gc.auto": "0",
    }
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.devnull,
        "LANG": "C.UTF-8",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_ATTR_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_DIR": str(mirror),
        "GIT_WORK_TREE": str(work_tree),
        "GIT_INDEX_FILE": str(index),
        "GIT_CONFIG_COUNT": str(len(settings) + 1),
    }
    for number, (key, value) in enumerate(settings.items()):
        env[f"GIT_CONFIG_KEY_{number}"] = key
        env[f"GIT_CONFIG_VALUE_{number}"] = value
    extra = len(settings)
    env[f"GIT_CONFIG_KEY_{extra}"] = "safe.directory"
    env[f"GIT_CONFIG_VALUE_{extra}"] = str(mirror)
    return env


class Checkpoints:
    """Snapshots of one worktree, through the subagent's private index `index`.

    Args:
        mirror: the bare mirror the worktree belongs to (objects go there).
        work_tree: the subagent's worktree.
        index: a file of ours (never in the worktree) used as the index.
        excludes: the default excludes file (`activities._excludes`).
    """

    def __init__(self, mirror: Path, work_tree: Path, index: Path, excludes: Path) -> None:
        self._mirror = mirror
        self._work_tree = work_tree
        self._index = index
        self._excludes = excludes

    def take(self) -> str:
        """The worktree's current content as a tree id (ignored files left out).

        Raises:
            CheckpointError: git failed.
        """
        self._seed_index()
        return self._git("add", _TAKE, "", self._skip_nested()).strip()

    def restore(self, tree: str) -> None:
        """Make the worktree's (not ignored) files exactly those of `tree`.

        Files added since are deleted, changed ones rewritten, deleted ones brought back.

        Raises:
            CheckpointError: git failed.
        """
        self._seed_index()
        # The index must know every present file, then the tree's files are written.
        self._git("read-tree", _RESTORE, tree, self._skip_nested(), write_tree=True)
        forget_hand_over(self._work_tree)  # restored files are root's until the next start

    def _skip_nested(self) -> list[str]:
        """Pathspecs leaving out every nested repository (a `.git` below the top).

        `git add` on a nested repository already in the index runs `git status`
        inside it, which reads that repository's own config, filters included: a
        subagent could make the host run a command (tests/sandbox/test_escape_task.py).
        """
        skip = []
        for parent, dirs, files in os.walk(self._work_tree):
            here = Path(parent)
            if here != self._work_tree and (".git" in dirs or ".git" in files):
                skip.append(f":(top,literal,exclude){here.relative_to(self._work_tree)}")
                dirs[:] = []
            else:
                dirs[:] = [d for d in dirs if d != ".git"]
        return skip

    def _seed_index(self) -> None:
        # A fresh index hashes every file once; start from the worktree's own index
        # (it has the checkout's stat data) when it is where the mirror says it is.
        if self._index.exists():
            return
        self._index.parent.mkdir(parents=True, exist_ok=True)
        admin = self._admin_dir()
        if admin is not None and (admin / "index").is_file():
            shutil.copyfile(admin / "index", self._index)

    def _admin_dir(self) -> Path | None:
        """The mirror's admin directory of this worktree, found from the mirror side."""
        expected = str(self._work_tree / ".git")
        for gitdir in (self._mirror / "worktrees").glob("*/gitdir"):
            try:
                if gitdir.read_text(errors="replace").strip() == expected:
                    return gitdir.parent
            except OSError:
                continue
        return None

    def _git(
        self, name: str, script: str, tree: str, skip: list[str], *, write_tree: bool = False
    ) -> str:
        """Run `script` (git commands) in one sandbox: `$1` is `tree`, then `skip`."""
        env = _confined_env(self._mirror, self._work_tree, self._index, self._excludes)
        readable = [self._mirror, *borrowed_objects(self._mirror), self._work_tree]
        writable = [self._mirror / "objects", self._index.parent]
        if write_tree:  # a restore writes the snapshot's files back
            writable.append(self._work_tree)
        readable.append(self._excludes)
        prefix = confined_prefix(self._work_tree, readable, writable, env)
        try:
            done = subprocess.run(
                [*prefix, "sh", "-c", script, "sh", tree, *skip],
                cwd=self._work_tree,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=GIT_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CheckpointError(f"git {name} failed: {exc}") from exc
        if done.returncode != 0:
            why = done.stderr.decode(errors="replace").strip()[-800:]
            raise CheckpointError(f"git {name} failed ({done.returncode}): {why}")
        return done.stdout.decode(errors="replace")
