"""Task work can yield the CPU to the chat: a tasks-only worker runs at
`task_worker_nice`, and what it runs in a sandbox says so from inside (bwrap
inherits the niceness; a Docker container gets the matching `cpu_shares`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from activities.sandbox._docker_containers import cpu_shares

ROOT = Path(__file__).resolve().parents[2]
NICE = 7

# A worker process in miniature: it takes its priority as `run_worker` does, then runs
# one command in a real sandbox that prints its niceness (field 19 of /proc/self/stat)
# and, where it has one of its own (Docker), its cgroup's CPU weight.
WORKER = """
import asyncio, sys
from pathlib import Path
from activities.sandbox import SandboxUnavailable
from entrypoints.worker import Queues, lower_priority
from switchboard.models import Role
from switchboard.settings import Settings
from tests.sandbox.conftest import make_backend
from tests.sandbox.helpers import make_checkout

SCRIPT = (
    "cut -d ' ' -f 19 /proc/self/stat; "
    "cat /sys/fs/cgroup/cpu/cpu.shares 2>/dev/null || cat /sys/fs/cgroup/cpu.weight 2>/dev/null"
    " || true"
)

async def main(backend: str, queues: str, base: Path, nice: int) -> None:
    settings = Settings(_env_file=None, data_dir=base / "data", task_worker_nice=nice)
    lower_priority(settings, Queues(queues))
    checkout = make_checkout(base)
    try:
        box = make_backend(backend, settings)
    except SandboxUnavailable as exc:
        print("unavailable:", exc)
        return
    try:
        spec = checkout.spec(Role.EXPLORER)
        done = await box.exec(spec, ["sh", "-c", SCRIPT], timeout=60, output_limit=1024)
        assert done.ok, done
        print(done.stdout.strip())
    finally:
        await box.remove_task(checkout.task_id)

asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])))
"""


def in_sandbox(backend: str, queues: str, base: Path) -> list[int]:
    """What a command run by a `queues` worker sees: [niceness, CPU weight if its own]."""
    done = subprocess.run(
        [sys.executable, "-c", WORKER, backend, queues, str(base), str(NICE)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    if done.stdout.startswith("unavailable:"):
        pytest.skip(f"{backend} sandbox {done.stdout.strip()}")
    return [int(line) for line in done.stdout.split()]


@pytest.mark.parametrize(("queues", "added"), [("tasks", NICE), ("chat", 0), ("all", 0)])
def test_a_tasks_worker_runs_bwrap_commands_at_its_niceness(
    tmp_path: Path, queues: str, added: int
) -> None:
    # 19 is as nice as it gets (a test run under `nice` starts closer to it).
    assert in_sandbox("bwrap", queues, tmp_path)[0] == min(19, os.nice(0) + added)


@pytest.mark.parametrize(("queues", "added"), [("tasks", NICE), ("all", 0)])
def test_a_tasks_worker_gives_its_docker_sandboxes_its_cpu_weight(
    tmp_path: Path, queues: str, added: int
) -> None:
    seen = in_sandbox("docker", queues, tmp_path)
    shares = cpu_shares(min(19, os.nice(0) + added))
    # cgroup v2 shows Docker's shares as a weight (runc's conversion).
    assert seen[-1] in {shares, 1 + ((shares - 2) * 9999) // 262142}
    assert cpu_shares(0) == 1024 and cpu_shares(10) == 110
