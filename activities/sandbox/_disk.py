"""Disk bounds of a subagent's worktree: what it may add to its base commit.

The bound is the base commit's own footprint (apparent size and entries, read
from the mirror, which sandboxes cannot write) plus `sandbox_disk_bytes` and
`sandbox_disk_files`, so a large repository is not refused for being large.

Checked after every tool call of a worker (the model gets the violation back as
the call's error) and before its work is committed (the commit is refused). A
single command can still overshoot between two checks, by at most the per-file
limit (RLIMIT_FSIZE) times the files it writes before its time limit; what it
wrote stays visible to the next check.
"""

from __future__ import annotations

import functools
import os
import stat
import subprocess
from dataclasses import dataclass

from switchboard.settings import Settings


@dataclass(frozen=True, slots=True)
class WorktreeLimits:
    """How much a subagent may keep in its worktree (its `.git` file not counted)."""

    max_bytes: int
    max_files: int

    @classmethod
    def from_settings(
        cls, settings: Settings, mirror: str | None = None, base_commit: str | None = None
    ) -> WorktreeLimits:
        """The settings' allowance on top of the base commit's footprint (when known)."""
        size, entries = 0, 0
        if mirror and base_commit:
            size, entries = base_footprint(os.path.realpath(mirror), base_commit)
        return cls(
            max_bytes=size + settings.sandbox_disk_bytes,
            max_files=entries + settings.sandbox_disk_files,
        )


@functools.lru_cache(maxsize=256)
def base_footprint(mirror: str, commit: str) -> tuple[int, int]:
    """Apparent size and entry count (files and directories) of a commit's tree.

    Read with git from the mirror (ours; never from a worktree). (0, 0) when git
    cannot tell, which only makes the bound stricter.
    """
    try:
        done = subprocess.run(
            ["git", "--git-dir", mirror, "ls-tree", "-r", "-t", "-l", "-z", commit, "--"],
            capture_output=True,
            timeout=60,
            check=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_CONFIG_NOSYSTEM": "1"},
        )
    except (OSError, subprocess.SubprocessError):
        return 0, 0
    size = entries = 0
    for record in done.stdout.split(b"\0"):
        if not record:
            continue
        entries += 1
        fields = record.split(b"\t", 1)[0].split()
        if len(fields) == 4 and fields[3].isdigit():
            size += int(fields[3])
    return size, entries


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
