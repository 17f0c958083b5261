"""Escape attempts that the uid, user-namespace and seccomp hardening must stop, and the
disk bounds, on both backends (docs/security.md, "What a command cannot do").

Each kernel-facing attempt is one that succeeds in an unhardened sandbox: a root-owned
`0700` directory is listable by uid 0, `keyctl` and `personality` work for anyone,
`unshare -Ur` works wherever user namespaces are allowed.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities._git import commit_worktree
from activities.sandbox import ExecResult, Sandbox, WorktreeLimits, check_worktree_bounds
from activities.tools import ToolActivities
from switchboard.contracts import CommitInput, SandboxSpec, ToolOutcome
from switchboard.models import Role
from switchboard.settings import Settings
from switchboard.tools import CheckedCall, ToolName
from switchboard.wire import Errors
from tests.sandbox.helpers import Checkout, git

SYSCALLS = {
    # name: (x86_64, aarch64)
    "keyctl": (250, 219),
    "bpf": (321, 280),
    "io_uring_setup": (425, 425),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "get_mempolicy": (239, 236),
}
EPERM = 1

# A python3 probe: calls a syscall through libc and prints its errno (0: it worked).
PROBE = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
number, *args = (int(a) for a in sys.argv[1:])
result = libc.syscall(number, *args)
print("errno", ctypes.get_errno() if result == -1 else 0)
"""


async def sh(sandbox: Sandbox, spec: SandboxSpec, script: str) -> ExecResult:
    return await sandbox.exec(
        spec, ["sh", "-c", script], timeout=20, output_limit=16_384, merge_stderr=True
    )


async def probe(sandbox: Sandbox, spec: SandboxSpec, name: str, *args: int) -> int:
    arch = 0 if platform.machine() == "x86_64" else 1
    argv = ["python3", "-c", PROBE, str(SYSCALLS[name][arch]), *map(str, args)]
    result = await sandbox.exec(spec, argv, timeout=20, output_limit=4096, merge_stderr=True)
    assert result.ok and result.stdout.startswith("errno "), result.stdout
    return int(result.stdout.split()[1])


@pytest.fixture
def root_only(checkout: Checkout) -> Path:
    """A root-owned 0700 directory with a 0600 file, inside the mirror every sandbox sees."""
    secret_dir = checkout.mirror / "root-only"
    secret_dir.mkdir(mode=0o700)
    (secret_dir / "key").write_text("root secret\n")
    (secret_dir / "key").chmod(0o600)
    (checkout.mirror / "root-file").write_text("root secret\n")
    (checkout.mirror / "root-file").chmod(0o600)
    return secret_dir


@pytest.mark.skipif(os.geteuid() != 0, reason="the worker runs as root only as root")
@pytest.mark.parametrize("role", [Role.WORKER, Role.REVIEWER])
async def test_commands_never_run_as_root(
    sandbox: Sandbox, checkout: Checkout, root_only: Path, settings: Settings, role: Role
) -> None:
    assert checkout.worktree.stat().st_uid == 0
    spec = checkout.spec(role)
    listing = await sh(sandbox, spec, f"ls {root_only}; cat {root_only}/key")
    assert not listing.ok and "root secret" not in listing.stdout
    assert "key" not in listing.stdout.replace(f"{root_only}/key", "")
    read = await sh(sandbox, spec, f"cat {checkout.mirror}/root-file")
    assert not read.ok and "root secret" not in read.stdout
    status = await sh(sandbox, spec, "grep -E '^(Uid|Gid|CapEff):' /proc/self/status")
    host = await sh(sandbox, spec, "id -u")
    assert host.ok and host.stdout.strip() != "0", host.stdout
    assert "CapEff:\t0000000000000000" in status.stdout
    # The host sees the worker's files as the sandbox uid's, never root's.
    if role is Role.WORKER:
        assert (await sh(sandbox, spec, "echo x > mine.txt")).ok
        assert (checkout.worktree / "mine.txt").stat().st_uid == settings.sandbox_uid


@pytest.mark.skipif(not Path("/etc/ssl/private").is_dir(), reason="no /etc/ssl/private here")
async def test_etc_ssl_private_is_not_listable(sandbox: Sandbox, checkout: Checkout) -> None:
    result = await sh(sandbox, checkout.spec(Role.WORKER), "ls -la /etc/ssl/private")
    assert not result.ok, result.stdout
    assert "Permission denied" in result.stdout or "No such file" in result.stdout


async def test_no_new_user_namespaces_and_no_mounts(sandbox: Sandbox, checkout: Checkout) -> None:
    spec = checkout.spec(Role.WORKER)
    nested = await sh(sandbox, spec, "unshare -Ur id")
    assert not nested.ok and "uid=0" not in nested.stdout, nested.stdout
    also = await sh(sandbox, spec, "unshare -U -r -m sh -c 'mount -t tmpfs none /tmp && echo IN'")
    assert not also.ok and "IN" not in also.stdout
    tmpfs = await sh(sandbox, spec, "mount -t tmpfs none /tmp && echo MOUNTED")
    assert not tmpfs.ok and "MOUNTED" not in tmpfs.stdout
    mounts_before = await sh(sandbox, spec, "cat /proc/self/mounts")
    assert "tmpfs none" not in mounts_before.stdout


async def test_seccomp_refuses_what_an_agent_never_needs(
    sandbox: Sandbox, checkout: Checkout
) -> None:
    spec = checkout.spec(Role.WORKER)
    status = await sh(sandbox, spec, "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status")
    assert "Seccomp:\t2" in status.stdout and "NoNewPrivs:\t1" in status.stdout, status.stdout
    # KEYCTL_GET_KEYRING_ID of the session keyring: works for any uid without the filter.
    assert await probe(sandbox, spec, "keyctl", 0, -3, 0) == EPERM
    assert await probe(sandbox, spec, "bpf", 0, 0, 0) == EPERM
    assert await probe(sandbox, spec, "io_uring_setup", 1, 0) == EPERM
    assert await probe(sandbox, spec, "perf_event_open", 0, 0, -1, -1, 0) == EPERM
    assert await probe(sandbox, spec, "userfaultfd", 0) == EPERM
    ptrace = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    import time; time.sleep(5); os._exit(0)\n"
        "print('attach', libc.ptrace(16, pid, 0, 0), ctypes.get_errno())\n"
        "print('traceme', libc.ptrace(0, 0, 0, 0), ctypes.get_errno())\n"
        "print('personality', libc.personality(0x0040000), ctypes.get_errno())\n"
        "print('personality0', libc.personality(0))\n"
        "os.kill(pid, 9)\n"
    )
    traced = await sandbox.exec(
        spec, ["python3", "-c", ptrace], timeout=20, output_limit=4096, merge_stderr=True
    )
    assert traced.ok, traced.stdout
    assert "attach -1 1\n" in traced.stdout and "traceme -1 1\n" in traced.stdout
    assert "personality -1 1\n" in traced.stdout and "personality0 0\n" in traced.stdout
    # What a coding agent does still works: threads, forks, git, a compiler-like pipeline.
    ok = await sh(sandbox, spec, "git status --short && (echo a | sort) && python3 -c 'print(1)'")
    assert ok.ok, ok.stdout
    assert (await sh(sandbox, spec, WORKLOAD)).stdout.strip().endswith("WORKLOAD OK")


# A coding agent's everyday work, every step of which must pass both filters: a
# repository of its own in /tmp, commits, a test run with threads and processes.
WORKLOAD = """set -e
cd /tmp && rm -rf work && git init -q work && cd work
git config user.email a@b && git config user.name a
printf 'def add(a, b):\n    return a + b\n' > calc.py
printf 'from calc import add\ndef test_add():\n    assert add(1, 2) == 3\n' > test_calc.py
git add -A && git commit -qm one && git log --oneline | wc -l
python3 - <<'PY'
import concurrent.futures, subprocess, sys
from calc import add
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    assert list(pool.map(add, range(8), range(8))) == [2 * n for n in range(8)]
with concurrent.futures.ProcessPoolExecutor(2) as pool:
    assert sum(pool.map(abs, range(-4, 0))) == 10
out = subprocess.run([sys.executable, "-c", "import test_calc; test_calc.test_add()"])
assert out.returncode == 0
PY
tar czf /tmp/w.tgz . && echo WORKLOAD OK
"""


async def test_docker_keeps_its_default_profile_under_the_filter(
    sandbox: Sandbox, checkout: Checkout
) -> None:
    """Docker: the daemon's default profile still applies (a call it refuses to a
    container without CAP_SYS_NICE, which Switchboard's filter allows, is refused) and
    Switchboard's filter is stacked on it (a second filter; ptrace and io_uring, which
    Docker's default allows, are refused above). bubblewrap: the filter alone."""
    spec = checkout.spec(Role.WORKER)
    status = await sh(sandbox, spec, "grep -E '^Seccomp_filters:' /proc/self/status || true")
    mempolicy = await probe(sandbox, spec, "get_mempolicy", 0, 0, 0, 0, 0)
    if sandbox.name == "docker":
        assert mempolicy == EPERM
        assert sandbox.describe()["guarantees"]["seccomp"].startswith("Docker's profile (")
        expected = "2"
    else:
        assert mempolicy == 0
        expected = "1"
    if status.stdout.strip():  # kernels from 5.9 count the filters
        assert status.stdout.split()[-1] == expected, status.stdout


async def test_a_file_over_the_size_limit_is_cut(
    sandbox: Sandbox, checkout: Checkout, settings: Settings
) -> None:
    spec = checkout.spec(Role.WORKER)
    result = await sh(sandbox, spec, "head -c 3000000 /dev/zero > big.bin")
    assert not result.ok, result.stdout
    assert "File size limit exceeded" in result.stdout or "File too large" in result.stdout
    assert (checkout.worktree / "big.bin").stat().st_size == 2 * 1024 * 1024
    tools = ToolActivities(settings, sandbox)
    calls = [call(ToolName.RUN, command="head -c 3000000 /dev/zero > big2.bin")]
    [told] = await run_calls(tools, spec, checkout.base_commit, calls)
    assert not told.ok and "a file grew past 2 MiB, the limit per file" in told.output


def call(name: ToolName, **arguments: object) -> CheckedCall:
    return CheckedCall(call_id=f"c-{name.value}", name=name, arguments=arguments)


async def run_calls(
    tools: ToolActivities, spec: SandboxSpec, base: str, calls: list[CheckedCall]
) -> list[ToolOutcome]:
    """The tool runner of `subagent_step`, as the step activity calls it."""
    outcomes: list[ToolOutcome] = await ActivityEnvironment().run(
        tools.run_calls, spec, base, calls
    )
    return outcomes


async def test_a_tool_call_over_the_disk_bound_is_told(
    sandbox: Sandbox, checkout: Checkout, settings: Settings
) -> None:
    tools = ToolActivities(settings, sandbox)
    spec = checkout.spec(Role.WORKER)
    many = settings.sandbox_disk_files + 10
    calls = [
        call(ToolName.RUN, command="echo fine > small.txt"),
        call(ToolName.RUN, command=f"mkdir many && cd many && seq {many} | xargs touch"),
        call(ToolName.RUN, command="rm -r many"),
    ]
    small, over, cleaned = await run_calls(tools, spec, checkout.base_commit, calls)
    assert small.ok and small.limit is None
    assert not over.ok and over.limit == "disk"
    # The base commit's 3 entries (README.md, src, src/calc.py) plus the allowance.
    assert f"more than {settings.sandbox_disk_files + 3:,} files" in over.output
    assert cleaned.ok and cleaned.limit is None


def test_the_bound_is_on_top_of_the_base_commit(checkout: Checkout, settings: Settings) -> None:
    readme = len("# demo\n")
    calc = len("def add(a, b):\n    return a + b\n")
    limits = WorktreeLimits.from_settings(settings, str(checkout.mirror), checkout.base_commit)
    assert limits.max_files == 3 + settings.sandbox_disk_files
    assert limits.max_bytes == readme + calc + settings.sandbox_disk_bytes
    unknown = WorktreeLimits.from_settings(settings, str(checkout.mirror), "0" * 40)
    assert unknown.max_files == settings.sandbox_disk_files  # stricter, never looser


async def test_size_bound_counts_apparent_size(tmp_path: Path) -> None:
    limits = WorktreeLimits(max_bytes=10_000, max_files=5)
    (tmp_path / ".git").write_text("gitdir: elsewhere\n")
    (tmp_path / "a").write_bytes(b"x" * 6000)
    assert check_worktree_bounds(tmp_path, limits) is None
    with open(tmp_path / "sparse", "wb") as sparse:
        sparse.truncate(5000)  # no blocks on disk, but git would store 5000 bytes
    violation = check_worktree_bounds(tmp_path, limits)
    assert violation is not None and "more than 9.766 KiB" in violation
    (tmp_path / "sparse").unlink()
    (tmp_path / "link").symlink_to("/usr/bin/python3")  # never followed
    assert check_worktree_bounds(tmp_path, limits) is None
    for name in "bcde":
        (tmp_path / name).touch()
    violation = check_worktree_bounds(tmp_path, limits)
    assert violation is not None and "more than 5 files" in violation


def test_a_commit_over_the_disk_bound_is_refused(checkout: Checkout) -> None:
    base = checkout.worktree.parents[2]  # the layout the repo activities make: data dir
    settings = Settings(data_dir=base, sandbox_disk_files=100)
    commit = CommitInput(
        worktree_path=str(checkout.worktree), base_commit=checkout.base_commit, message="m"
    )
    many = checkout.worktree / "many"
    many.mkdir()
    for index in range(120):
        (many / f"f{index}").write_text("x")
    with pytest.raises(ApplicationError) as refused:
        commit_worktree(settings, commit)
    assert refused.value.type == Errors.DISK_LIMIT and refused.value.non_retryable
    assert "not committed" in str(refused.value) and "more than 103 files" in str(refused.value)
    assert git(checkout.worktree, "rev-parse", "HEAD") == checkout.base_commit
    shutil.rmtree(many)
    (checkout.worktree / "one.txt").write_text("fine\n")
    done = commit_worktree(settings, commit)
    assert done.committed and done.head != checkout.base_commit


def test_without_libseccomp_no_sandbox_starts(tmp_path: Path) -> None:
    """Never silently unfiltered: both backends refuse (Docker's agent loads the program
    libseccomp compiles on the host) and the doctor says why."""
    script = (
        "import sys; sys.modules['pyseccomp'] = None  # as if it were not installed\n"
        "from activities.sandbox import BwrapSandbox, SandboxUnavailable, seccomp_status\n"
        "from activities.sandbox._docker import DockerSandbox\n"
        "from switchboard.settings import Settings\n"
        f"settings = Settings(data_dir={str(tmp_path)!r})\n"
        "print('doctor', seccomp_status())\n"
        "for backend in (BwrapSandbox, DockerSandbox):\n"
        "    try:\n"
        "        backend(settings)\n"
        "        print('STARTED', backend.__name__)\n"
        "    except SandboxUnavailable as exc:\n"
        "        print('REFUSED', backend.__name__, exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert "doctor (False, 'the seccomp filter cannot be built" in done.stdout, done.stdout
    assert "REFUSED BwrapSandbox the seccomp filter cannot be built" in done.stdout
    assert "Refusing to run sandboxes without it" in done.stdout
    assert "REFUSED DockerSandbox the seccomp filter cannot be built" in done.stdout
