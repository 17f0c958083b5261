"""Per-command control groups for the bubblewrap backend: pids, memory and CPU limits.

bwrap has no resource limits of its own, and RLIMIT_NPROC does not bind a
process whose uid maps to root, so a fork bomb is only stopped by a pids
cgroup. Used when this process may create cgroups (root on cgroup v1, or a
writable cgroup v2 subtree); `detect` returns None otherwise and the backend
says so in `describe()`.

Layout: `<our cgroup>/switchboard/<command>` (v1, per controller) or
`<our cgroup>/switchboard/<command>` with the controllers enabled on the way
(v2; if our own cgroup holds processes, they first move to `<our cgroup>/worker`,
because v2 forbids processes in a cgroup whose children get controllers).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CPU_PERIOD_US = 100_000
REMOVE_ATTEMPTS = 50


@dataclass(frozen=True)
class Counters:
    """Kernel event counts of one command's cgroup: how often each limit bit."""

    oom_kills: int = 0
    pids_refused: int = 0


@dataclass
class CommandCgroup:
    """The cgroup(s) of one sandboxed command; the launcher joins them before exec."""

    version: int
    dirs: dict[str, Path] = field(default_factory=dict)
    """Controller name (or "unified") to directory."""

    @property
    def procs_files(self) -> list[str]:
        return sorted({str(d / "cgroup.procs") for d in self.dirs.values()})

    def counters(self) -> Counters:
        if self.version == 2:
            d = self.dirs["unified"]
            return Counters(
                oom_kills=_event(d / "memory.events", "oom_kill"),
                pids_refused=_event(d / "pids.events", "max"),
            )
        return Counters(
            oom_kills=_event(self.dirs["memory"] / "memory.oom_control", "oom_kill"),
            pids_refused=_event(self.dirs["pids"] / "pids.events", "max"),
        )

    def kill(self) -> None:
        """SIGKILL everything left in the cgroup (the PID namespace normally did)."""
        if self.version == 2 and (self.dirs["unified"] / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (self.dirs["unified"] / "cgroup.kill").write_text("1")
            return
        for procs in self.procs_files:
            for pid in _pids(Path(procs)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        for d in set(self.dirs.values()):
            for _ in range(REMOVE_ATTEMPTS):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    self.kill()  # EBUSY: a process still exits
                    time.sleep(0.01)


@dataclass(frozen=True)
class Cgroups:
    """Where this process may create command cgroups, and which version."""

    version: int
    parents: dict[str, Path]

    @classmethod
    def detect(cls) -> Cgroups | None:
        """Usable cgroups here, proven by creating and removing one; else None."""
        try:
            found = _detect_v1() or _detect_v2()
            if found is None:
                return None
            probe = found.create(f"probe-{os.getpid()}", pids=16, memory_bytes=64 << 20, cpus=1)
            probe.remove()
            return found
        except OSError:
            return None

    def create(self, name: str, *, pids: int, memory_bytes: int, cpus: float) -> CommandCgroup:
        group = CommandCgroup(version=self.version)
        for controller, parent in self.parents.items():
            d = parent / name
            d.mkdir(exist_ok=True)
            group.dirs[controller] = d
        quota = max(1000, int(cpus * CPU_PERIOD_US))
        try:
            if self.version == 2:
                d = group.dirs["unified"]
                (d / "pids.max").write_text(str(pids))
                (d / "memory.max").write_text(str(memory_bytes))
                _try_write(d / "memory.swap.max", "0")
                _try_write(d / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            else:
                (group.dirs["pids"] / "pids.max").write_text(str(pids))
                (group.dirs["memory"] / "memory.limit_in_bytes").write_text(str(memory_bytes))
                _try_write(group.dirs["memory"] / "memory.memsw.limit_in_bytes", str(memory_bytes))
                if "cpu" in group.dirs:
                    (group.dirs["cpu"] / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
                    (group.dirs["cpu"] / "cpu.cfs_quota_us").write_text(str(quota))
        except OSError:
            group.remove()
            raise
        return group

    def leftovers(self, alive: Callable[[int], bool]) -> list[CommandCgroup]:
        """Command cgroups whose worker process is gone (named `...-p<pid>-<hex>`).

        A command never outlives its worker: the activity attempt is retried by the
        next one. So whatever a dead worker's cgroups still hold is an orphan, even
        for a task that is still running. Names without a worker pid are from
        before it was recorded, and count as orphans too.
        """
        groups: dict[str, CommandCgroup] = {}
        for controller, parent in self.parents.items():
            with contextlib.suppress(OSError):
                for d in parent.iterdir():
                    if not d.is_dir():
                        continue
                    owner = re.search(r"-p(\d+)-[0-9a-f]{8}$", d.name)
                    if owner is not None and alive(int(owner.group(1))):
                        continue
                    group = groups.setdefault(d.name, CommandCgroup(version=self.version))
                    group.dirs[controller] = d
        return list(groups.values())

    @property
    def limits_cpu(self) -> bool:
        return "cpu" in self.parents or self.version == 2


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(root, mount point, fs type, super options) of each cgroup mount."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and tail and tail[0] in ("cgroup", "cgroup2"):
            options = set(tail[2].split(",")) if len(tail) > 2 else set()
            found.append((fields[3], fields[4], tail[0], options))
    return found


def _own_paths() -> dict[str, str]:
    """Controller (or "" for v2) to this process's cgroup path."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _join(mount_root: str, mount_point: str, own: str) -> Path:
    relative = own
    if mount_root != "/" and own.startswith(mount_root):
        relative = own[len(mount_root) :]
    return Path(mount_point) / relative.lstrip("/")


def _detect_v1() -> Cgroups | None:
    own = _own_paths()
    parents: dict[str, Path] = {}
    for root, point, fstype, options in _mounts():
        for controller in ("pids", "memory", "cpu"):
            if fstype == "cgroup" and controller in options and controller in own:
                parents[controller] = _join(root, point, own[controller]) / "switchboard"
    if "pids" not in parents or "memory" not in parents:
        return None
    for parent in parents.values():
        parent.mkdir(exist_ok=True)
    return Cgroups(version=1, parents=parents)


def _detect_v2() -> Cgroups | None:
    own = _own_paths().get("")
    mounts = [(r, p) for r, p, t, _ in _mounts() if t == "cgroup2"]
    if own is None or not mounts:
        return None
    base = _join(mounts[0][0], mounts[0][1], own)
    available = (base / "cgroup.controllers").read_text().split()
    if "pids" not in available or "memory" not in available:
        return None
    wanted = [c for c in ("pids", "memory", "cpu") if c in available]
    enabled = (base / "cgroup.subtree_control").read_text().split()
    if not set(wanted) <= set(enabled):
        if own != "/" and _pids(base / "cgroup.procs"):
            leaf = base / "worker"
            leaf.mkdir(exist_ok=True)
            for pid in _pids(base / "cgroup.procs"):
                with contextlib.suppress(ProcessLookupError):
                    (leaf / "cgroup.procs").write_text(str(pid))
        (base / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
    parent = base / "switchboard"
    parent.mkdir(exist_ok=True)
    (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
    return Cgroups(version=2, parents={"unified": parent})


def _event(path: Path, key: str) -> int:
    with contextlib.suppress(OSError):
        match = re.search(rf"^{key} (\d+)$", path.read_text(), re.MULTILINE)
        if match:
            return int(match.group(1))
    return 0


def _pids(procs: Path) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(p) for p in procs.read_text().split()]
    return []


def _try_write(path: Path, value: str) -> None:
    """Optional knobs (swap accounting, CPU) are absent on some kernels."""
    with contextlib.suppress(OSError):
        path.write_text(value)
