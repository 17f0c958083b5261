"""Disk bounds of a subagent's worktree: total size and number of entries.

Checked after every tool call of a worker (the model gets the violation back as
the call's error) and before its work is committed (the commit is refused). A
single command can still overshoot between two checks, by at most the per-file
limit (RLIMIT_FSIZE) times the files it writes before its time limit; what it
wrote stays visible to the next check.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from switchboard.settings import Settings


@dataclass(frozen=True, slots=True)
class WorktreeLimits:
    """How much a subagent may keep in its worktree (its `.git` file not counted)."""

    max_bytes: int
    max_files: int

    @classmethod
    def from_settings(cls, settings: Settings) -> WorktreeLimits:
        return cls(max_bytes=settings.sandbox_disk_bytes, max_files=settings.sandbox_disk_files)


def check_worktree_bounds(path: str | os.PathLike[str], limits: WorktreeLimits) -> str | None:
    """The violated bound as a sentence for the model and the user, or None.

    Counts every directory entry below `path` (files, directories, symlinks) and
    the apparent size of regular files; stops walking as soon as a bound is
    crossed. Symlinks are never followed.
    """
    entries = size = 0
    top = os.fspath(path)
    for root, dirs, files in os.walk(top):
        names = [n for n in dirs + files if not (root == top and n == ".git")]
        entries += len(names)
        if entries > limits.max_files:
            return (
                f"the worktree holds more than {limits.max_files:,} files and directories "
                "(the limit per subagent); delete what is not part of the change"
            )
        for name in files:
            if root == top and name == ".git":
                continue
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            size += info.st_size if stat.S_ISREG(info.st_mode) else 0
            if size > limits.max_bytes:
                return (
                    f"the worktree holds more than {_human(limits.max_bytes)} "
                    "(the limit per subagent); delete large or generated files"
                )
    return None


def _human(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.4g} {unit}"
        value /= 1024
    return f"{value:.4g} GiB"
