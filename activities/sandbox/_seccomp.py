"""The seccomp filter both backends put on every sandboxed command.

One deny list, compiled to BPF by libseccomp (through `pyseccomp`, ctypes over
the system's libseccomp2) on the host. bubblewrap loads the program with
`--seccomp FD`; in Docker the exec agent loads the same program onto itself
(PID 1, before any command), stacked on the daemon's default profile (an allow
list), so both backends refuse every syscall listed here and Docker also refuses
what its own profile refuses. Everything else is allowed by this filter;
what is refused is what a coding agent never needs and what widens the kernel
surface a sandbox escape starts from: new namespaces, tracing other processes,
BPF, the kernel keyring, mounts, kernel modules, personality flags, kexec, perf,
userfaultfd, swap, reboot, accounting, quotas, clock setting, raw I/O.

A refused syscall returns EPERM (clone3: ENOSYS, so that libc falls back to
clone, whose flags the filter can inspect). Syscalls of a foreign architecture
(32-bit x86 on x86_64, arm on aarch64) kill the process: libseccomp's default for
an architecture the filter was not built for.

When libseccomp or its bindings are missing, `SeccompUnavailable` is raised and
either backend refuses to start: a sandbox is never run without its filter.
"""

from __future__ import annotations

import errno
import functools
import os
from typing import Any

DENIED: tuple[str, ...] = (
    # new namespaces and joining others
    "unshare",
    "setns",
    # other processes' memory and state
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "pidfd_getfd",
    "kcmp",
    # BPF, perf, userfaultfd, io_uring (which runs syscalls past the filter)
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    # the kernel keyring
    "keyctl",
    "add_key",
    "request_key",
    # mounts
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "open_by_handle_at",
    "name_to_handle_at",
    "fanotify_init",
    # kernel modules, kexec, reboot, swap, accounting, quotas
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "lookup_dcookie",
    # time, host identity, consoles, raw I/O, kernel log
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "vhangup",
    "iopl",
    "ioperm",
    "syslog",
    # obsolete interfaces
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "nfsservctl",
)
"""Refused outright (EPERM). Names the running architecture lacks are skipped."""

NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
    0x00000080,  # CLONE_NEWTIME
)
"""`clone` with any of these flags is refused; threads and forks are not."""

PERSONALITY_ALLOWED_BITS = 0x0008 | 0x20000
"""PER_LINUX32 and UNAME26: `personality(0)` and these stay possible; any other
bit (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, ...) is refused, and so is the
0xffffffff query."""

SUPPORTED_ARCHES = ("x86_64", "aarch64")


class SeccompUnavailable(RuntimeError):
    """The filter cannot be built here (libseccomp or pyseccomp missing, unknown arch)."""


def _personality_bits() -> list[int]:
    return [1 << bit for bit in range(64) if not (1 << bit) & PERSONALITY_ALLOWED_BITS]


def _library() -> Any:
    try:
        import pyseccomp
    except (ImportError, OSError) as exc:  # OSError: the bindings found no libseccomp.so.2
        raise SeccompUnavailable(
            "the seccomp filter cannot be built: pyseccomp or libseccomp2 is missing "
            f"({exc}); install libseccomp2 and the pyseccomp package. Refusing to run "
            "sandboxes without it."
        ) from exc
    return pyseccomp


@functools.cache
def filter_bpf() -> bytes:
    """The compiled BPF program for this machine's architecture (built once).

    Raises:
        SeccompUnavailable: libseccomp or its bindings are missing, or the
            architecture is not one this filter was written for.
    """
    lib = _library()
    machine = os.uname().machine
    if machine not in SUPPORTED_ARCHES:
        raise SeccompUnavailable(f"no seccomp filter written for the {machine} architecture")
    flt = lib.SyscallFilter(lib.ALLOW)
    eperm = lib.ERRNO(errno.EPERM)
    for name in DENIED:
        try:
            flt.add_rule(eperm, name)
        except (OSError, ValueError, RuntimeError):
            continue  # not a syscall of this architecture (e.g. _sysctl on aarch64)
    for flag in NAMESPACE_FLAGS:
        flt.add_rule(eperm, "clone", lib.Arg(0, lib.MASKED_EQ, flag, flag))
    for bit in _personality_bits():
        flt.add_rule(eperm, "personality", lib.Arg(0, lib.MASKED_EQ, bit, bit))
    flt.add_rule(lib.ERRNO(errno.ENOSYS), "clone3")
    read, write = os.pipe()
    try:
        with os.fdopen(write, "wb") as sink:
            flt.export_bpf(sink)
        with os.fdopen(read, "rb") as source:
            read = -1
            return source.read()
    finally:
        if read >= 0:
            os.close(read)


def filter_fd() -> int:
    """A new file descriptor holding the filter, at offset 0, for `bwrap --seccomp FD`.

    The caller passes it to bwrap (which reads it once) and closes it.
    """
    return memfd("switchboard-seccomp", filter_bpf())


def memfd(name: str, data: bytes) -> int:
    """A close-on-exec memory file holding `data`, at offset 0 (the caller closes it)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd


def describe() -> str:
    """One line for `describe()` and the doctor: what the filter refuses, or why it cannot."""
    try:
        filter_bpf()
    except SeccompUnavailable as exc:
        return f"unavailable: {exc}"
    return (
        f"seccomp: {len(DENIED)} syscalls refused (namespaces, ptrace, bpf, keyctl, mount, "
        "modules, kexec, perf, userfaultfd, io_uring, ...), clone with namespace flags, "
        "personality flags"
    )
