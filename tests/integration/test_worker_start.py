"""What a worker does before it polls, kept short: a restarted worker's start is on
the recovery path (docs/benchmarks.md, B2)."""

from __future__ import annotations

from temporalio.client import Client

from entrypoints.worker import build_id, build_workers
from switchboard.settings import Settings


async def test_every_worker_carries_the_build_id_of_our_code(
    client: Client, settings: Settings
) -> None:
    # Without an explicit id the SDK hashes the bytecode of every loaded module first.
    workers = build_workers(client, settings)
    assert {worker.config()["build_id"] for worker in workers} == {build_id()}
    assert len(build_id()) == 32 and int(build_id(), 16) >= 0
