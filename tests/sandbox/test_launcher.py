"""The bubblewrap launcher (`activities/sandbox/_launch.py`): what it starts, what it sets.

One shell joins the cgroups, stages every bind with a single mount(8) and sets the
rlimits; these tests hold it to the programs it may start, the limits it must set
(with and without a memory cgroup), the paths it must stage (spaces, non-ASCII)
and the descriptors that must never reach a command.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from activities.sandbox import BwrapSandbox, SandboxUnavailable, _bwrap
from activities.sandbox._base import MAX_OPEN_FILES
from activities.sandbox._cgroup import CommandCgroup
from activities.sandbox._launch import Programs, launch, stage_fstab
from activities.sandbox._owner import STAGE_ROOT
from switchboard.models import Role
from switchboard.settings import Settings
from tests.sandbox.helpers import Checkout, make_checkout

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="no bubblewrap")


def _programs(argv: list[str]) -> list[str]:
    """The programs a launcher argv execs in turn, up to bwrap."""
    chain, i = [], 0
    while True:
        name = os.path.basename(argv[i])
        chain.append(name)
        if name == "bwrap":
            return chain
        if name == "unshare":
            i = argv.index("--", i) + 1
        elif name == "sh":
            i = argv.index("--", i) + 5  # fstab, file blocks, open files, address space
        elif name == "setpriv":
            i += 4
        else:
            raise AssertionError(f"unexpected program {name} in {argv}")


def test_a_root_launch_starts_four_programs_before_the_command(
    settings: Settings, tmp_path: Path
) -> None:
    programs = Programs(unshare="/usr/bin/unshare", setpriv="/usr/bin/setpriv")
    cgroup = CommandCgroup(version=1, dirs={"pids": Path("/sys/fs/cgroup/pids/x")})
    (tmp_path / "wt").mkdir()
    bwrap = ["/usr/bin/bwrap", "--bind", str(tmp_path / "wt"), "/workspace", "--", "true"]
    launcher = launch(programs, settings, cgroup, (65534, 65534), bwrap)
    try:
        assert _programs(launcher.argv) == ["unshare", "sh", "setpriv", "bwrap"]
        assert f"{STAGE_ROOT}/0" in launcher.argv  # the bind comes from the stage
        assert len(launcher.fds) == 1
    finally:
        launcher.close()


def test_an_unprivileged_launch_only_joins_and_limits(settings: Settings) -> None:
    programs = Programs(unshare="/usr/bin/unshare", setpriv="/usr/bin/setpriv")
    launcher = launch(programs, settings, None, None, ["/usr/bin/bwrap", "--", "true"])
    assert _programs(launcher.argv) == ["sh", "bwrap"]
    assert launcher.fds == ()


def test_the_fstab_escapes_what_mount_would_split_on() -> None:
    fstab = stage_fstab(["/data dir/wt\tx", "/dé/#1\\"]).decode()
    lines = fstab.splitlines()
    assert lines[0] == f"switchboard-stage {STAGE_ROOT} tmpfs mode=0755,size=64k 0 0"
    assert lines[1].split()[:2] == ["/data\\040dir/wt\\011x", f"{STAGE_ROOT}/0"]
    assert lines[2].split()[0] == "/d\\303\\251/\\0431\\134"
    assert all(len(line.split()) == 6 for line in lines)


async def _run(box: BwrapSandbox, checkout: Checkout, script: str) -> str:
    spec = checkout.spec(Role.WORKER)
    await box.start(spec)
    try:
        result = await box.exec(spec, ["sh", "-c", script], timeout=20, output_limit=16_384)
    finally:
        await box.remove_task(checkout.task_id)
    assert result.exit_code == 0, result
    return result.stdout


def _limits(text: str) -> dict[str, str]:
    """`/proc/self/limits`: name to soft limit."""
    found = {}
    for line in text.splitlines()[1:]:
        name, soft = line[:26].strip(), line[26:47].strip()
        found[name] = soft
    return found


@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroup", "no-cgroup"])
async def test_commands_get_the_rlimits(
    settings: Settings, checkout: Checkout, cgroups: bool
) -> None:
    box = BwrapSandbox(settings, use_cgroups=cgroups)
    limits = _limits(await _run(box, checkout, "cat /proc/self/limits"))
    assert limits["Max file size"] == str(settings.sandbox_file_bytes)
    assert limits["Max open files"] == str(MAX_OPEN_FILES)
    assert limits["Max core file size"] == "0"
    if box.describe()["guarantees"]["memory_limit"] == "RLIMIT_AS per process":
        assert limits["Max address space"] == str(settings.sandbox_memory_mb * 1024 * 1024)
    else:
        assert limits["Max address space"] == "unlimited"


async def test_no_launcher_descriptor_reaches_the_command(
    settings: Settings, checkout: Checkout
) -> None:
    box = BwrapSandbox(settings)
    out = await _run(box, checkout, "ls /proc/self/fd")
    assert sorted(out.split()) == ["0", "1", "2", "3"]  # 3: ls's own listing


async def test_a_data_directory_with_spaces_and_non_ascii_is_staged(
    settings: Settings, tmp_path: Path
) -> None:
    odd = tmp_path / "data dir é #1"
    odd.mkdir()
    checkout = make_checkout(odd)
    box = BwrapSandbox(settings)
    out = await _run(box, checkout, "cat README.md && echo new > made.txt && git log --oneline")
    assert out.startswith("# demo\n")
    assert "initial" in out
    assert (checkout.worktree / "made.txt").read_text() == "new\n"


async def test_a_launch_that_fails_leaves_no_descriptor_open(
    settings: Settings, checkout: Checkout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status pipe and the seccomp program are the sandbox's until the command starts:
    a launcher that cannot be built (no memfd, too many open files) must not leak them."""
    box = BwrapSandbox(settings)
    spec = checkout.spec(Role.WORKER)
    await box.start(spec)

    def fails(*args: object) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(_bwrap, "launch", fails)
    before = len(os.listdir("/proc/self/fd"))
    try:
        for _ in range(3):
            with pytest.raises(OSError, match="Too many open files"):
                await box.exec(spec, ["true"], timeout=20, output_limit=1024)
            with pytest.raises(SandboxUnavailable, match="smoke run failed"):
                box.check()
    finally:
        await box.remove_task(checkout.task_id)
    assert len(os.listdir("/proc/self/fd")) == before
