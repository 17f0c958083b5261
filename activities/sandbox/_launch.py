"""The launcher in front of bwrap: the programs a sandboxed command starts through.

When the worker runs as root (see `_owner`), a command starts as

    unshare --mount  ->  sh (cgroups, one mount(8), rlimits)  ->  setpriv  ->  bwrap

In a private mount namespace, the shell joins the command's cgroups, then one
`mount --all` reads an fstab (in a memfd) that puts a tmpfs on the stage and binds
each staged directory under it, and sets the rlimits (`ulimit`, soft and hard);
`setpriv` drops to the sandbox uid, and bwrap builds the sandbox from the stage.
Without an identity to drop to (the worker is not root), the shell only joins the
cgroups and sets the rlimits, then execs bwrap.

Every program here costs about a millisecond of CPU to start, so the stage is one
mount(8) process, not a `mount -t tmpfs` plus a `mkdir` and a `mount --bind` per
directory, and the rlimits are the shell's builtin, not `prlimit`: the same mounts
in the same order and the same limits, with 2 + 2N fewer programs started per
command (bench/sandbox_start.py; docs/benchmarks.md).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from activities.sandbox._base import MAX_OPEN_FILES, SandboxUnavailable
from activities.sandbox._cgroup import CommandCgroup
from activities.sandbox._owner import STAGE_ROOT, stage_sources
from activities.sandbox._seccomp import memfd
from switchboard.settings import Settings

LAUNCH = (
    'pid=$$; while [ "$1" != -- ]; do echo "$pid" > "$1" || exit 125; shift; done; '
    'if [ "$2" != - ]; then mount --all --no-mtab --fstab "$2" || exit 125; fi; '
    'ulimit -f "$3" && ulimit -n "$4" && ulimit -c 0 || exit 125; '
    'if [ "$5" != - ]; then ulimit -v "$5" || exit 125; fi; shift 5; exec "$@"'
)
"""Join each cgroup.procs file given before `--`; then, after it: mount the fstab
named (`-`: none), set RLIMIT_FSIZE (512-byte blocks, as POSIX counts them),
RLIMIT_NOFILE, RLIMIT_CORE 0 and RLIMIT_AS (KiB; `-`: none); exec the rest."""

STAGE_TMPFS = "mode=0755,size=64k"
_FSTAB_SAFE = frozenset(range(0x21, 0x7F)) - {ord("\\"), ord("#")}


@dataclass(frozen=True)
class Programs:
    """Where the launcher's util-linux programs are (None: not installed)."""

    unshare: str | None
    setpriv: str | None

    @classmethod
    def find(cls) -> Programs:
        return cls(shutil.which("unshare"), shutil.which("setpriv"))


@dataclass
class Launch:
    """A launcher command line, and the descriptors it reads that `close` closes once
    the command has ended.

    The fstab stays in this process (close-on-exec, never inherited): mount(8), root
    in the same PID namespace, reads it through `/proc/<our pid>/fd/<fd>`, so no
    program after it (bwrap never closes what it inherits) holds it.
    """

    argv: list[str]
    fds: tuple[int, ...] = ()

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


def launch(
    programs: Programs,
    settings: Settings,
    cgroup: CommandCgroup | None,
    owner: tuple[int, int] | None,
    bwrap: list[str],
) -> Launch:
    """The whole command line for `bwrap`; its bind sources are rewritten to the stage
    when the launcher drops to `owner`."""
    prefix: list[str] = []
    fds: tuple[int, ...] = ()
    fstab = "-"
    if owner is not None:
        if not programs.setpriv or not programs.unshare:
            raise SandboxUnavailable(
                "setpriv and unshare (util-linux) are needed to run as an unprivileged uid"
            )
        staged, bwrap = stage_sources(bwrap)
        os.makedirs(STAGE_ROOT, mode=0o755, exist_ok=True)
        fd = memfd("switchboard-stage", stage_fstab(staged))
        fds, fstab = (fd,), f"/proc/{os.getpid()}/fd/{fd}"
        prefix += [programs.unshare, "--mount", "--propagation", "private", "--"]
    procs = cgroup.procs_files if cgroup is not None else []
    # Without a memory cgroup, RLIMIT_AS is the memory limit (per process).
    address_space = "-" if cgroup is not None else str(settings.sandbox_memory_mb * 1024)
    prefix += ["/bin/sh", "-c", LAUNCH, "launch", *procs, "--", fstab]
    prefix += [str(settings.sandbox_file_bytes // 512), str(MAX_OPEN_FILES), address_space]
    if owner is not None and programs.setpriv:
        uid, gid = owner
        prefix += [programs.setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    return Launch(prefix + bwrap, fds)


def stage_fstab(staged: list[str]) -> bytes:
    """mount(8)'s input: a tmpfs on the stage, then each directory bound at `<stage>/<i>`.

    Entries are mounted in this order; `X-mount.mkdir` makes each mount point in the
    fresh tmpfs. Paths are written with octal escapes for anything but printable ASCII.
    """
    lines = [f"switchboard-stage {STAGE_ROOT} tmpfs {STAGE_TMPFS} 0 0".encode()]
    for index, source in enumerate(staged):
        target = f"{STAGE_ROOT}/{index}".encode()
        lines.append(_escaped(source) + b" " + target + b" none bind,X-mount.mkdir 0 0")
    return b"\n".join(lines) + b"\n"


def _escaped(path: str) -> bytes:
    return b"".join(
        bytes([byte]) if byte in _FSTAB_SAFE else f"\\{byte:03o}".encode()
        for byte in os.fsencode(path)
    )
