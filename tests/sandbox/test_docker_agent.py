"""The Docker backend's exec agent: PID 1 of each container, one command at a time.

Commands cannot kill, stop or trace it; when it is lost anyway (container killed,
agent OOM-killed or frozen) the command says so, and the next one gets a fresh
container. Skipped, with the reason, where Docker cannot run.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import pytest

from activities.sandbox import Limit, SandboxUnavailable
from activities.sandbox import _docker as docker_backend
from activities.sandbox import _docker_containers as containers
from activities.sandbox import _owner as owner
from activities.sandbox._agent_link import RUN_MOUNT, AgentLink, AgentLost
from activities.sandbox._docker import DockerSandbox
from switchboard.contracts import SandboxSpec
from switchboard.models import Role
from switchboard.settings import Settings
from tests.sandbox.conftest import make_backend
from tests.sandbox.helpers import Checkout
from tests.sandbox.test_conformance import host_processes_with, sh, still_usable


@pytest.fixture
async def box(settings: Settings, checkout: Checkout) -> AsyncIterator[DockerSandbox]:
    try:
        backend = make_backend("docker", settings)
    except SandboxUnavailable as exc:
        pytest.skip(f"docker sandbox unavailable here: {exc}")
    assert isinstance(backend, DockerSandbox)
    yield backend
    await backend.remove_task(checkout.task_id)


def container(spec: SandboxSpec) -> docker.models.containers.Container:
    return docker.from_env().containers.get(containers.container_name(spec.sandbox_id))


async def until_running(marker: str) -> None:
    for _ in range(100):
        if host_processes_with(marker):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{marker!r} never started")


async def test_commands_cannot_kill_stop_or_trace_the_agent(
    box: DockerSandbox, checkout: Checkout
) -> None:
    spec = checkout.spec(Role.WORKER)
    result = await sh(
        box, spec, "kill -9 1; kill -STOP 1; kill -INT 1; kill -TERM 1; kill -KILL -1; echo done"
    )
    assert "done" in result.stdout, result
    await still_usable(box, spec)
    probe = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
print("attach", libc.ptrace(16, 1, 0, 0), os.strerror(ctypes.get_errno()))  # PTRACE_ATTACH
for name in ("environ", "mem"):
    try:
        open(f"/proc/1/{name}", "rb").read(1)
        print(name, "READ")
    except OSError as exc:
        print(name, "denied", exc.strerror)
print("pid", os.getpid() != 1)
"""
    traced = await box.exec(
        spec, ["python3", "-c", probe], timeout=20, output_limit=16_384, merge_stderr=True
    )
    assert traced.ok, traced
    assert "attach -1 Operation not permitted" in traced.stdout
    assert "environ denied" in traced.stdout and "mem denied" in traced.stdout
    assert "READ" not in traced.stdout


async def test_commands_on_one_sandbox_run_one_at_a_time(
    box: DockerSandbox, checkout: Checkout
) -> None:
    # Each command ends by killing every other process: concurrent ones must queue.
    spec = checkout.spec(Role.WORKER)
    script = "echo begin; sleep 0.3; echo end"
    results = await asyncio.gather(*(sh(box, spec, script) for _ in range(3)))
    for result in results:
        assert result.ok and result.stdout == "begin\nend\n", result


async def test_a_container_killed_under_a_command_is_reported_then_replaced(
    box: DockerSandbox, checkout: Checkout
) -> None:
    spec = checkout.spec(Role.WORKER)
    marker = "sleep 3517"
    running = asyncio.ensure_future(sh(box, spec, marker, timeout=60))
    await until_running(marker)
    await asyncio.to_thread(container(spec).kill)
    result = await asyncio.wait_for(running, 10)
    assert result.exit_code is None and not result.ok
    assert "container ended under the command (killed from outside)" in result.stdout
    await still_usable(box, spec)


async def test_a_container_killed_between_commands_is_replaced_silently(
    box: DockerSandbox, checkout: Checkout
) -> None:
    spec = checkout.spec(Role.WORKER)
    await still_usable(box, spec)
    await asyncio.to_thread(container(spec).kill)
    await still_usable(box, spec)


async def test_a_cancelled_command_leaves_nothing_behind(
    box: DockerSandbox, checkout: Checkout
) -> None:
    spec = checkout.spec(Role.WORKER)
    marker = "sleep 3518"
    running = asyncio.ensure_future(sh(box, spec, f"{marker} & {marker}", timeout=60))
    await until_running(marker)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    for _ in range(100):
        if not host_processes_with(marker):
            break
        await asyncio.sleep(0.05)
    assert host_processes_with(marker) == []
    await still_usable(box, spec)


async def test_a_frozen_agent_is_reset_at_the_timeout(
    box: DockerSandbox, checkout: Checkout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(docker_backend, "SETTLE_SECONDS", 0.5)
    spec = checkout.spec(Role.WORKER)
    await still_usable(box, spec)
    await asyncio.to_thread(container(spec).pause)
    result = await sh(box, spec, "echo never", timeout=1)
    assert result.limit is Limit.TIMEOUT and result.exit_code is None
    assert "did not answer in time" in result.stdout
    assert 1.4 < result.duration < 10
    await still_usable(box, spec)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to raise the agent's oom_score_adj")
async def test_an_agent_killed_by_the_oom_killer_is_reported_as_memory(
    box: DockerSandbox, settings: Settings, checkout: Checkout
) -> None:
    spec = checkout.spec(Role.WORKER)
    await still_usable(box, spec)
    # Make the agent the OOM killer's choice, as a command lowering its own score
    # below the agent's could.
    agent_pid = (await asyncio.to_thread(container, spec)).attrs["State"]["Pid"]
    Path(f"/proc/{agent_pid}/oom_score_adj").write_text("1000")
    hog = f"b = b'x' * ({settings.sandbox_memory_mb * 3} * 1024 * 1024)"
    result = await sh(box, spec, f'echo 0 > /proc/self/oom_score_adj && python3 -c "{hog}"')
    assert result.limit is Limit.MEMORY and not result.ok, result
    assert "container ended under the command (out of memory)" in result.stdout
    await still_usable(box, spec)


async def test_the_runtime_directory_lives_only_while_the_agent_starts(
    box: DockerSandbox, settings: Settings, checkout: Checkout
) -> None:
    runtime = Path(settings.data_dir).resolve() / containers.RUNTIME_DIR
    spec = checkout.spec(Role.WORKER)
    await box.start(spec)
    assert list(runtime.iterdir()) == []
    # What a worker killed mid-start leaves behind is found and reaped with its task.
    orphan = "task-left-behind"
    (runtime / f"{orphan}-0.0badf00d").mkdir()
    assert orphan in await box.task_ids()
    await box.remove_task(orphan)
    assert list(runtime.iterdir()) == []
    assert orphan not in await box.task_ids()
    await still_usable(box, spec)


async def test_large_input_and_output_pass_through_whole(
    box: DockerSandbox, checkout: Checkout
) -> None:
    spec = checkout.spec(Role.WORKER)
    data = os.urandom(3 * 1024 * 1024)
    echoed = await box.exec(
        spec, ["sh", "-c", "cat | sha256sum"], stdin=data, timeout=20, output_limit=4096
    )
    assert echoed.ok and echoed.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    big = 2 * 1024 * 1024
    result = await box.exec(
        spec, ["head", "-c", str(big), "/dev/zero"], timeout=20, output_limit=big
    )
    assert result.ok and len(result.stdout) == big and not result.truncated


FAKE_AGENT = """
import socket, sys, time
conn = socket.socket(socket.AF_UNIX)
conn.connect(sys.argv[1])
conn.sendall(b'{"counters": [0, 0], %s}\\n')
time.sleep(60)
"""
TRACEABLE = FAKE_AGENT % '"undumpable": false, "filtered": true'
UNFILTERED = FAKE_AGENT % '"undumpable": true, "filtered": false'


@pytest.mark.parametrize(
    ("entrypoint", "reason"),
    [
        (["python3", "-c", "raise SystemExit(3)"], "the container exited (3)"),
        (["python3", "-c", TRACEABLE, f"{RUN_MOUNT}/agent.sock"], "non-dumpable"),
        (["python3", "-c", UNFILTERED, f"{RUN_MOUNT}/agent.sock"], "seccomp filter"),
    ],
    ids=["exits", "traceable", "unfiltered"],
)
async def test_an_agent_that_cannot_start_fails_the_start_and_leaves_nothing(
    box: DockerSandbox,
    settings: Settings,
    checkout: Checkout,
    monkeypatch: pytest.MonkeyPatch,
    entrypoint: list[str],
    reason: str,
) -> None:
    monkeypatch.setattr(containers, "AGENT_ARGV", entrypoint)
    spec = checkout.spec(Role.WORKER)
    with pytest.raises(SandboxUnavailable, match="exec agent did not start") as failed:
        await box.start(spec)
    assert reason in str(failed.value)
    runtime = Path(settings.data_dir).resolve() / containers.RUNTIME_DIR
    assert list(runtime.iterdir()) == []
    left = docker.from_env().containers.list(
        all=True, filters={"label": f"switchboard.sandbox={spec.sandbox_id}"}
    )
    assert left == []
    monkeypatch.undo()
    await still_usable(box, spec)


@pytest.mark.parametrize(
    "reply",
    [
        b'{"exit_code": 0, "limit": null, "seen": 9, "stdout": 999999, "stderr": 0, '
        b'"counters": [0, 0]}\n',  # more output than asked for
        b'{"exit_code": "0", "limit": null, "seen": 0, "stdout": 0, "stderr": 0, '
        b'"counters": [0, 0]}\n',  # an exit code that is no int
        b'{"exit_code": 0, "limit": "memory", "seen": 0, "stdout": 0, "stderr": 0, '
        b'"counters": [0, 0]}\n',  # a limit the agent cannot know
        b"not json\n",
        b"",  # hung up
    ],
)
async def test_a_reply_out_of_protocol_counts_as_a_lost_agent(reply: bytes) -> None:
    host, agent = socket.socketpair()
    with agent:
        agent.sendall(b'{"counters": [0, 0], "undumpable": true}\n')
        link = await AgentLink.connect(host)
        agent.sendall(reply)
        if not reply:
            agent.shutdown(socket.SHUT_WR)
        with pytest.raises(AgentLost):
            await link.run(["true"], None, timeout=1, keep=1024, ceiling=8192, merge_stderr=False)
        assert not link.alive


def test_a_daemon_without_a_seccomp_profile_is_refused() -> None:
    """The filter is stacked on the daemon's default profile, never used alone."""
    try:
        info = docker.from_env().info()
    except docker.errors.DockerException as exc:
        pytest.skip(f"no Docker daemon here: {exc}")
    real = containers.daemon_seccomp(info)
    assert real in ("default", "builtin") or real.startswith("/"), real
    for options in (["name=apparmor"], ["name=seccomp,profile=unconfined"], None):
        with pytest.raises(SandboxUnavailable, match="applies no seccomp profile"):
            containers.daemon_seccomp({"SecurityOptions": options})


async def test_stop_kills_at_once_and_deletes_the_container_in_the_background(
    box: DockerSandbox, checkout: Checkout
) -> None:
    """A subagent's ending waits for the kill, not for the daemon to delete the container."""
    spec = checkout.spec(Role.WORKER)
    running = asyncio.ensure_future(sh(box, spec, "sleep 1717", timeout=60))
    await until_running("sleep 1717")

    await box.stop(spec.sandbox_id)

    assert host_processes_with("sleep 1717") == []  # killed before stop returned
    await asyncio.wait_for(running, 10)
    api = docker.from_env().api  # low level: listing does not inspect what is being deleted
    name = containers.container_name(spec.sandbox_id)
    for _ in range(200):  # deleted by the daemon a moment later
        if not api.containers(all=True, filters={"name": name}):
            break
        await asyncio.sleep(0.05)
    assert api.containers(all=True, filters={"name": name}) == []
    # Started again right after a stop, it waits for that deletion and runs.
    await box.stop(spec.sandbox_id)
    await still_usable(box, spec)


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root worker hands worktrees over")
async def test_start_walks_the_worktree_once_and_still_hands_over_new_files(
    box: DockerSandbox, checkout: Checkout, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real hand_over, counted: on a 50,000-file worktree each walk costs about
    # as much as the container start, so a start walks once, not once more at launch.
    walks: list[Path] = []

    def counted(worktree: Path, settings: Settings) -> bool:
        walks.append(worktree)
        return owner.hand_over(worktree, settings)

    monkeypatch.setattr(docker_backend, "hand_over", counted)
    monkeypatch.setattr(containers, "hand_over", counted)
    spec = checkout.spec(Role.WORKER)
    await box.start(spec)
    assert len(walks) == 1
    await box.stop(spec.sandbox_id)
    await box.start(spec)  # nothing written since: the mark makes it one stat
    assert (checkout.worktree).stat().st_gid == settings.sandbox_gid
    await box.stop(spec.sandbox_id)
    (checkout.worktree / "from-host.txt").write_text("written by host-side git\n")
    owner.forget_hand_over(checkout.worktree)  # as host-side git does after writing
    await box.start(spec)  # a new round: files written since are the sandbox uid's
    assert len(walks) == 3
    assert (checkout.worktree / "from-host.txt").stat().st_uid == settings.sandbox_uid
    written = await sh(box, spec, "echo more >> from-host.txt && echo ok")
    assert "ok" in written.stdout, written
    # A container lost under a command is relaunched by the next one, which hands over.
    lost = container(spec)
    lost.kill()
    lost.wait(timeout=20)
    for _ in range(2):  # the first may still find the old link and report it lost
        again = await box.exec(spec, ["true"], timeout=20, output_limit=4096)
        if again.ok:
            break
    assert again.ok, again
    assert len(walks) == 4
