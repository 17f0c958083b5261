"""What a worker does before it polls, kept short: a restarted worker's start is on
the recovery path (docs/benchmarks.md, B2)."""

from __future__ import annotations

import sys

from temporalio.client import Client

from entrypoints.worker import WORKER_CODE, Queues, build_id, build_workers, start
from switchboard.conversation import conversation_queue
from switchboard.settings import Settings
from switchboard.temporal import ensure_search_attributes


async def test_every_worker_carries_the_build_id_of_our_code(
    client: Client, settings: Settings
) -> None:
    # Without an explicit id the SDK hashes the bytecode of every loaded module first.
    workers = build_workers(client, settings)
    assert {worker.config()["build_id"] for worker in workers} == {build_id()}
    assert len(build_id()) == 32 and int(build_id(), 16) >= 0


async def test_the_queues_split_between_a_tasks_worker_and_a_chat_worker(
    client: Client, settings: Settings
) -> None:
    # `switchboard up` runs `--queues tasks` (niced) and `--queues chat` side by side.
    for queues in Queues:  # one worker per queue and client: a queue name each
        apart = settings.model_copy(
            update={"task_queue": f"{settings.task_queue}-{queues}", "host_id": f"h-{queues}"}
        )
        polled = {w.task_queue for w in build_workers(client, apart, queues=queues)}
        chat = {conversation_queue(apart.task_queue)}
        tasks = {apart.task_queue, apart.host_queue}
        expected = {Queues.CHAT: chat, Queues.TASKS: tasks, Queues.ALL: tasks | chat}
        assert polled == expected[queues]


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
