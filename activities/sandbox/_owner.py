"""Which host uid a sandboxed command runs as, and a worktree made writable for it.

A worker that runs as root must never hand root's identity to a command: even
without capabilities, uid 0 owns every root file the sandbox can see (a `0710`
directory such as /etc/ssl/private, a root-only file in a mirror). So when the
worktree belongs to root, commands run as `settings.sandbox_uid:sandbox_gid`
(65534, nobody, by default), and the worktree is handed to that uid before a
worker's sandbox starts: every entry below it is chowned to the sandbox uid;
the worktree directory itself stays root's (host-side git refuses a worktree
owned by another uid) but gets the sandbox group and group write, so a command
can create and remove files at its top. Its `.git` file stays root's (it is
mounted read-only in every sandbox).

A worktree owned by anyone else (a worker that does not run as root) keeps
today's rule: commands run as its owner.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from switchboard.settings import Settings


def sandbox_identity(worktree: Path, settings: Settings) -> tuple[int, int]:
    """The uid:gid commands in a sandbox around `worktree` run as (never 0)."""
    info = worktree.stat()
    if info.st_uid != 0:
        return info.st_uid, info.st_gid
    return settings.sandbox_uid, settings.sandbox_gid


def hand_over(worktree: Path, settings: Settings) -> bool:
    """Give a root-owned worktree's contents to the sandbox uid; whether it had to.

    Only when this process is root and root owns the worktree (anything else is
    left as it is). Symlinks are chowned themselves, never followed. Run before
    a worker's sandbox starts. The worktree directory's group becomes the sandbox
    gid only once every entry is handed over: that is the mark that makes the next
    start a single stat. Host-side git that writes files into the worktree (a
    checkout, a checkpoint restore) clears the mark with `forget_hand_over`.
    """
    if not unprepared(worktree, settings):
        return False
    uid, gid = settings.sandbox_uid, settings.sandbox_gid
    entries = [str(p) for p in worktree.iterdir() if p.name != ".git"]
    for chunk in range(0, len(entries), 512):  # chown(1) walks in C: ~20x a Python walk
        subprocess.run(
            [
                "chown",
                "-R",
                "--no-dereference",
                f"{uid}:{gid}",
                "--",
                *entries[chunk : chunk + 512],
            ],
            check=True,
            capture_output=True,
        )
    top = worktree.stat()
    os.chown(worktree, 0, gid)
    os.chmod(worktree, stat.S_IMODE(top.st_mode) | 0o070)
    return True


def forget_hand_over(worktree: Path) -> None:
    """Host-side git wrote files into `worktree` as root: the next start hands them over."""
    if os.geteuid() == 0 and worktree.stat().st_uid == 0:
        os.chown(worktree, 0, 0)


# ---- bubblewrap: reaching the worktree as an unprivileged uid ----------------------------

STAGE_ROOT = "/run/switchboard-stage"
"""An empty host directory; in each command's private mount namespace, a tmpfs on it
holds bind mounts of the worktree and mirrors that the sandbox uid can reach (made
by the launcher, `_launch`)."""

_BIND_OPS = frozenset({"--bind", "--ro-bind", "--bind-try", "--ro-bind-try"})
_TWO_ARG_OPS = _BIND_OPS | {"--setenv", "--symlink", "--dev-bind", "--dev-bind-try", "--chmod"}
_SYSTEM_SOURCES = ("/usr/", "/etc/", "/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/")


def stage_sources(bwrap_argv: list[str]) -> tuple[list[str], list[str]]:
    """Directories to stage, and bwrap's argv with their binds taken from the stage.

    bwrap running as an unprivileged uid must be able to walk to every bind
    source, and the data directory may sit under a root-only one (/root). The
    worktree and mirrors are bound from the stage instead; system paths are not.
    A file source (the worktree's `.git`) comes from its staged directory.
    """
    staged: list[str] = []
    out = list(bwrap_argv)
    i = 0
    while i < len(out) and out[i] != "--":
        if out[i] in _BIND_OPS and i + 2 < len(out):
            source = out[i + 1]
            if not (source + "/").startswith(_SYSTEM_SOURCES):
                out[i + 1] = _staged(source, staged)
        i += 3 if out[i] in _TWO_ARG_OPS else 1
    return staged, out


def _staged(source: str, staged: list[str]) -> str:
    for index, directory in enumerate(staged):
        if source == directory or source.startswith(directory + "/"):
            return f"{STAGE_ROOT}/{index}{source[len(directory) :]}"
    if os.path.isdir(source):
        staged.append(source)
        return f"{STAGE_ROOT}/{len(staged) - 1}"
    parent, name = os.path.split(source)
    return f"{_staged(parent, staged)}/{name}"


def unprepared(worktree: Path, settings: Settings) -> bool:
    """A root-owned worktree not yet handed to the sandbox uid (a cheap stat)."""
    info = worktree.stat()
    return os.geteuid() == 0 and info.st_uid == 0 and info.st_gid != settings.sandbox_gid
