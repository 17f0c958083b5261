"""What a worker does before it polls, kept short: a restarted worker's start is on
the recovery path (docs/benchmarks.md, B2)."""

from __future__ import annotations

import sys

from temporalio.client import Client

from entrypoints.worker import WORKER_CODE, build_id, build_workers, start
from switchboard.settings import Settings
from switchboard.temporal import ensure_search_attributes


async def test_every_worker_carries_the_build_id_of_our_code(
    client: Client, settings: Settings
) -> None:
    # Without an explicit id the SDK hashes the bytecode of every loaded module first.
    workers = build_workers(client, settings)
    assert {worker.config()["build_id"] for worker in workers} == {build_id()}
    assert len(build_id()) == 32 and int(build_id(), 16) >= 0


async def test_the_start_connects_checks_the_sandbox_and_loads_the_worker_code(
    client: Client, settings: Settings
) -> None:
    # The imports run in a thread beside the round trips; all are done when it returns.
    address = client.service_client.config.target_host
    ready = settings.model_copy(update={"temporal_address": address})
    connected, sandbox = await start(ready, None)
    assert await ensure_search_attributes(connected, ready.temporal_namespace) == []
    assert sandbox.name == "bwrap"
    assert set(WORKER_CODE) <= set(sys.modules)
