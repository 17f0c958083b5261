"""What the exec agent (`_agent.py`) does to itself before it serves any command.

Standard library only, like the agent: the host copies this file beside it as
`harden.py`, and the agent loads it with `runpy` (its `-I` puts no directory on
`sys.path`).

- `undumpable`: commands run as the agent's uid; a non-dumpable process cannot be
  traced nor its memory read by them.
- `load_filter`: Switchboard's seccomp program (the BPF bubblewrap loads, compiled
  by libseccomp on the host) onto the agent, so every command inherits it. It
  stacks on the profile Docker applied to the container: a syscall either refuses
  is refused.
"""

from __future__ import annotations

PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


def undumpable() -> bool:
    """Refuse ptrace and /proc/1/mem to processes without CAP_SYS_PTRACE (all commands)."""
    try:
        import ctypes

        return int(ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0
    except (ImportError, OSError, AttributeError):
        return False


def load_filter(path: str) -> bool:
    """Load the BPF program at `path` onto this process; whether the kernel took it."""
    try:
        import ctypes

        with open(path, "rb") as source:
            program = source.read()
        if not program or len(program) % 8:  # struct sock_filter: 8 bytes each
            return False

        class Fprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

        buffer = ctypes.create_string_buffer(program, len(program))
        fprog = Fprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
        libc = ctypes.CDLL(None, use_errno=True)
        zero = ctypes.c_ulong(0)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), zero, zero, zero) != 0:
            return False
        address = ctypes.c_void_p(ctypes.addressof(fprog))
        mode = ctypes.c_ulong(SECCOMP_MODE_FILTER)
        return int(libc.prctl(PR_SET_SECCOMP, mode, address, zero, zero)) == 0
    except (ImportError, OSError, AttributeError):
        return False
