"""The attack battery every sandbox backend must hold against (docs/security.md).

Each test runs against bubblewrap and Docker (skipped, with the reason, where a
backend cannot run). A limit must stop the attack, be reported, and leave the
sandbox usable for the next command.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from activities.sandbox import SANDBOX_ENV, ExecResult, Limit, Sandbox
from activities.tools import ToolActivities
from switchboard.contracts import SandboxSpec
from switchboard.models import Role
from switchboard.settings import Settings
from switchboard.tools import CheckedCall, ToolName
from tests.sandbox.helpers import Checkout, make_checkout

READ_ONLY_ROLES = (Role.EXPLORER, Role.REVIEWER)


async def sh(
    sandbox: Sandbox, spec: SandboxSpec, script: str, *, timeout: float = 20, limit: int = 16_384
) -> ExecResult:
    return await sandbox.exec(
        spec, ["sh", "-c", script], timeout=timeout, output_limit=limit, merge_stderr=True
    )


async def still_usable(sandbox: Sandbox, spec: SandboxSpec) -> None:
    after = await sh(sandbox, spec, "echo alive")
    assert after.ok and after.stdout == "alive\n" and after.limit is None


def host_processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


# ---- file system ---------------------------------------------------------------------


async def test_worker_writes_its_worktree(
    sandbox: Sandbox, checkout: Checkout, settings: Settings
) -> None:
    spec = checkout.spec(Role.WORKER)
    result = await sh(sandbox, spec, "mkdir -p pkg && echo hi > pkg/new.txt && git status --short")
    assert result.ok, result.stdout
    assert "?? pkg/" in result.stdout
    written = checkout.worktree / "pkg" / "new.txt"
    assert written.read_text() == "hi\n"
    # The worktree owner's, or the unprivileged sandbox uid's when root owns it: never root's.
    owner = checkout.worktree.stat().st_uid
    assert written.stat().st_uid == (owner or settings.sandbox_uid) != 0


@pytest.fixture
def foreign_checkout() -> Iterator[Checkout]:
    """A checkout owned by uid 1000 in a directory every uid may traverse."""
    base = Path(tempfile.mkdtemp(prefix="switchboard-owner-"))
    try:
        base.chmod(0o755)
        checkout = make_checkout(base)
        for path in [base, *base.rglob("*")]:
            os.lchown(path, 1000, 1000)
        yield checkout
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the worktree to uid 1000")
async def test_files_written_belong_to_the_worktree_owner(
    sandbox: Sandbox, foreign_checkout: Checkout
) -> None:
    spec = foreign_checkout.spec(Role.WORKER)
    try:
        result = await sh(sandbox, spec, "echo hi > owned.txt && git status --short")
        assert result.ok, result.stdout
        assert "?? owned.txt" in result.stdout
        info = (foreign_checkout.worktree / "owned.txt").stat()
        assert (info.st_uid, info.st_gid) == (1000, 1000)
    finally:
        await sandbox.remove_task(foreign_checkout.task_id)


@pytest.mark.parametrize("role", READ_ONLY_ROLES)
async def test_read_only_roles_cannot_write(
    sandbox: Sandbox, checkout: Checkout, role: Role
) -> None:
    # A worker ran first, as in a task: the files belong to the sandbox uid, so only
    # the read-only mount can refuse the writes.
    assert (await sh(sandbox, checkout.spec(Role.WORKER), "true")).ok
    spec = checkout.spec(role)
    before = (checkout.worktree / "src" / "calc.py").read_text()
    for script in ("echo x > new.txt", "echo x >> src/calc.py", "rm src/calc.py", "mkdir d"):
        result = await sh(sandbox, spec, script)
        assert not result.ok
        assert "Read-only file system" in result.stdout, (script, result.stdout)
    assert (checkout.worktree / "src" / "calc.py").read_text() == before
    assert sorted(p.name for p in checkout.worktree.iterdir()) == [".git", "README.md", "src"]


@pytest.mark.parametrize("role", [Role.WORKER, *READ_ONLY_ROLES])
async def test_planted_symlinks_do_not_reach_outside(
    sandbox: Sandbox, checkout: Checkout, role: Role
) -> None:
    secret = checkout.outside / "secret.txt"
    config = checkout.mirror / "config"
    config_before = config.read_text()
    (checkout.worktree / "abs").symlink_to(secret)
    (checkout.worktree / "rel").symlink_to(os.path.relpath(secret, checkout.worktree))
    (checkout.worktree / "gitconfig").symlink_to(config)
    spec = checkout.spec(role)
    for name in ("abs", "rel"):
        read = await sh(sandbox, spec, f"cat {name}")
        assert not read.ok and "host secret" not in read.stdout
        write = await sh(sandbox, spec, f"echo pwned > {name}")
        assert not write.ok
    mirror_write = await sh(sandbox, spec, "echo '[core] fsmonitor = evil' >> gitconfig")
    # Root's mirror: the unprivileged uid is refused before the read-only mount is reached.
    assert not mirror_write.ok
    assert re.search("Read-only file system|Permission denied", mirror_write.stdout)
    assert secret.read_text() == "host secret\n"
    assert config.read_text() == config_before


async def test_git_metadata_is_read_only_even_for_the_worker(
    sandbox: Sandbox, checkout: Checkout
) -> None:
    dot_git = (checkout.worktree / ".git").read_text()
    spec = checkout.spec(Role.WORKER)
    for script in ("echo 'gitdir: /tmp/evil' > .git", "rm -f .git", "git config core.x y"):
        assert not (await sh(sandbox, spec, script)).ok, script
    assert (checkout.worktree / ".git").read_text() == dot_git
    log = await sh(sandbox, spec, "git log -1 --format=%H")
    assert log.ok and log.stdout.strip() == checkout.base_commit


async def test_path_traversal_refused_by_tools_and_by_the_sandbox(
    sandbox: Sandbox, settings: Settings, checkout: Checkout
) -> None:
    tools = ToolActivities(settings, sandbox)
    spec = checkout.spec(Role.WORKER)
    rel = os.path.relpath(checkout.outside / "secret.txt", checkout.worktree)
    for path in (rel, str(checkout.outside / "secret.txt"), "src/../../escape.txt"):
        refused = await tools.run_one(
            spec,
            checkout.base_commit,
            CheckedCall(
                call_id="c", name=ToolName.WRITE_FILE, arguments={"path": path, "content": "x"}
            ),
        )
        assert not refused.ok and "outside the repository" in refused.output
    # Forced past the tool layer: the sandbox itself holds.
    forced = await sh(sandbox, spec, f"cat {rel}; cat {checkout.outside}/secret.txt")
    assert not forced.ok and "host secret" not in forced.stdout
    for target in ("../escape.txt", "/escape.txt", "/usr/escape.txt", "/etc/escape.txt"):
        assert not (await sh(sandbox, spec, f"echo x > {target}")).ok, target
    assert not (checkout.worktree.parent / "escape.txt").exists()
    assert (await sh(sandbox, spec, "echo scratch > /tmp/x && cat /tmp/x")).ok


async def test_no_host_secrets_in_the_file_system(sandbox: Sandbox, checkout: Checkout) -> None:
    spec = checkout.spec(Role.EXPLORER)
    result = await sh(sandbox, spec, "ls /root /home 2>&1; cat /etc/ssh/ssh_host_*_key 2>&1")
    assert "PRIVATE KEY" not in result.stdout
    home_entries = {p.name for p in Path("/home").iterdir()} if Path("/home").exists() else set()
    for entry in home_entries:
        assert f"\n{entry}\n" not in f"\n{result.stdout}"


# ---- identity, environment, network ---------------------------------------------------


async def test_no_capabilities_and_a_clean_environment(
    sandbox: Sandbox, checkout: Checkout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHBOARD_TEST_SECRET", "hunter2-token")
    spec = checkout.spec(Role.WORKER)
    result = await sh(sandbox, spec, "env; grep -h CapEff /proc/self/status")
    every_process = await sh(sandbox, spec, "cat /proc/*/environ 2>/dev/null; true")
    assert "hunter2-token" not in result.stdout + every_process.stdout
    names = {line.split("=", 1)[0] for line in result.stdout.splitlines() if "=" in line}
    assert names - {"PWD", "SHLVL", "_", "HOSTNAME", "OLDPWD"} <= set(SANDBOX_ENV)
    assert re.search(r"CapEff:\s+0+$", result.stdout, re.MULTILINE)


async def test_no_network(sandbox: Sandbox, checkout: Checkout) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    nameserver = "127.0.0.53"
    resolv = Path("/etc/resolv.conf")
    if resolv.exists():
        found = re.search(r"^nameserver\s+(\S+)", resolv.read_text(), re.MULTILINE)
        nameserver = found.group(1) if found else nameserver
    probe = f"""
import socket
def attempt(what, fn):
    try:
        fn()
        print(what, "REACHED")
    except OSError as exc:
        print(what, "blocked", type(exc).__name__)
attempt("tcp", lambda: socket.create_connection(("127.0.0.1", {port}), timeout=2))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
attempt("dns", lambda: udp.connect(("{nameserver}", 53)))  # a UDP connect sends nothing
print(open("/proc/net/dev").read())
"""
    try:
        spec = checkout.spec(Role.WORKER)
        result = await sandbox.exec(
            spec, ["python3", "-c", probe], timeout=20, output_limit=16_384, merge_stderr=True
        )
        assert result.ok, result.stdout
        assert "REACHED" not in result.stdout
        assert "tcp blocked" in result.stdout and "dns blocked" in result.stdout
        interfaces = re.findall(r"^\s*(\w+):", result.stdout, re.MULTILINE)
        assert interfaces == ["lo"]
    finally:
        server.close()


# ---- limits ---------------------------------------------------------------------------


FORK_BOMBS = {
    "classic": "bomb() { bomb | bomb & }; bomb",
    "persistent": "bomb() { while :; do bomb & done; }; bomb",
}
CARRY_ON = """
import os, subprocess, sys, time
subprocess.Popen(["sh", "-c", sys.argv[1]], stderr=subprocess.DEVNULL)
refused, deadline = False, time.monotonic() + 5
while not refused and time.monotonic() < deadline:
    try:
        pid = os.fork()
    except OSError:
        refused = True
    else:
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(0.01)
print("fork refused" if refused else "fork never refused", "- survived")
"""
"""Starts the bomb, forks now and then (for up to 5 s) until one is refused, carries on."""


@pytest.mark.parametrize("bomb", sorted(FORK_BOMBS))
async def test_fork_bomb_is_stopped_by_the_pids_limit(
    sandbox: Sandbox, checkout: Checkout, bomb: str
) -> None:
    if "none" in sandbox.describe()["guarantees"]["pids_limit"]:
        pytest.skip("no pids limit on this host; a fork bomb would hit the machine")
    spec = checkout.spec(Role.WORKER)
    result = await sandbox.exec(
        spec,
        ["python3", "-c", CARRY_ON, FORK_BOMBS[bomb]],
        timeout=20,
        output_limit=16_384,
        merge_stderr=True,
    )
    assert result.limit is Limit.PIDS, result  # the kernel refused the bomb's forks
    assert result.ok and "survived" in result.stdout
    assert result.duration < 10
    await still_usable(sandbox, spec)


async def test_memory_bomb_is_stopped_by_the_memory_limit(
    sandbox: Sandbox, settings: Settings, checkout: Checkout
) -> None:
    spec = checkout.spec(Role.WORKER)
    hog = f"b = b'x' * ({settings.sandbox_memory_mb * 3} * 1024 * 1024); print(len(b))"
    result = await sandbox.exec(
        spec, ["python3", "-c", hog], timeout=20, output_limit=16_384, merge_stderr=True
    )
    assert not result.ok
    guarantee = sandbox.describe()["guarantees"]["memory_limit"]
    if "RLIMIT_AS" in guarantee:
        assert "MemoryError" in result.stdout  # refused allocation, not an OOM kill
    else:
        assert result.limit is Limit.MEMORY, result
    await still_usable(sandbox, spec)


async def test_infinite_loop_is_stopped_by_the_timeout(
    sandbox: Sandbox, checkout: Checkout
) -> None:
    spec = checkout.spec(Role.WORKER)
    marker = "sleep 3141"
    result = await sh(sandbox, spec, f"{marker} & while :; do :; done", timeout=1.5)
    assert result.limit is Limit.TIMEOUT and result.exit_code is None and not result.ok
    assert 1.4 < result.duration < 8
    await asyncio.sleep(0.2)
    assert host_processes_with(marker) == []  # the background child died too
    await still_usable(sandbox, spec)


@pytest.mark.parametrize("script", ["head -c 100000000 /dev/zero", "yes"])
async def test_output_flood_is_cut_and_stopped(
    sandbox: Sandbox, checkout: Checkout, script: str
) -> None:
    spec = checkout.spec(Role.WORKER)
    result = await sh(sandbox, spec, script, timeout=15, limit=8192)
    assert result.truncated and result.limit is Limit.OUTPUT
    assert len(result.stdout) == 8192
    assert result.duration < 10  # stopped by the output ceiling, not by the timeout
    await still_usable(sandbox, spec)


async def test_background_processes_do_not_outlive_their_command(
    sandbox: Sandbox, checkout: Checkout
) -> None:
    spec = checkout.spec(Role.WORKER)
    marker = "sleep 2718"
    result = await sh(sandbox, spec, f"nohup {marker} >/dev/null 2>&1 & echo started")
    assert result.ok and "started" in result.stdout
    await asyncio.sleep(0.2)
    assert host_processes_with(marker) == []


async def test_a_reused_sandbox_id_gets_the_new_role(sandbox: Sandbox, checkout: Checkout) -> None:
    worker = checkout.spec(Role.WORKER)
    assert (await sh(sandbox, worker, "echo x > first.txt")).ok
    reviewer = worker.model_copy(update={"role": Role.REVIEWER})
    denied = await sh(sandbox, reviewer, "echo x > second.txt")
    assert not denied.ok and "Read-only file system" in denied.stdout
    assert not (checkout.worktree / "second.txt").exists()


# ---- cleanup --------------------------------------------------------------------------


async def test_stop_and_remove_task_leave_nothing_behind(
    sandbox: Sandbox, checkout: Checkout
) -> None:
    specs = [checkout.spec(Role.WORKER), checkout.spec(Role.EXPLORER)]
    for spec in specs:
        info = await sandbox.start(spec)
        assert info.backend == sandbox.name
    markers = ["sleep 1618", "sleep 1619"]
    running = [
        asyncio.ensure_future(sh(sandbox, spec, marker, timeout=60))
        for spec, marker in zip(specs, markers, strict=True)
    ]
    for _ in range(100):
        if all(host_processes_with(m) for m in markers):
            break
        await asyncio.sleep(0.05)
    assert all(host_processes_with(m) for m in markers)

    await sandbox.stop(specs[0].sandbox_id)
    await asyncio.wait_for(running[0], 10)
    assert host_processes_with(markers[0]) == []
    await sandbox.remove_task(checkout.task_id)
    await asyncio.wait_for(running[1], 10)
    assert host_processes_with(markers[1]) == []
    if sandbox.name == "docker":
        import docker

        client = docker.from_env()
        left = client.containers.list(
            all=True, filters={"label": f"switchboard.task={checkout.task_id}"}
        )
        assert left == []
    # A stopped sandbox starts again on demand.
    await still_usable(sandbox, specs[0])
