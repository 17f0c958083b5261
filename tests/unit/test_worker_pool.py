"""The worker's pool for blocking work is not the default's cores + 4 threads."""

from __future__ import annotations

import asyncio
import threading

from entrypoints.worker import BLOCKING_THREADS, run_workers


def test_blocking_calls_do_not_queue_behind_a_few_waiting_ones() -> None:
    # Calls that all wait for each other (as prepare_repo calls wait on their mirror's
    # lock) only finish when each has a thread: with asyncio's default pool (6 threads
    # on two cores) the barrier breaks instead.
    parties = 40
    assert parties <= BLOCKING_THREADS
    barrier = threading.Barrier(parties, timeout=30)

    async def main() -> list[int]:
        stop = asyncio.Event()
        running = asyncio.create_task(run_workers([], stop))
        await asyncio.sleep(0)  # run_workers sets the pool up before it waits
        try:
            return await asyncio.gather(*(asyncio.to_thread(barrier.wait) for _ in range(parties)))
        finally:
            stop.set()
            await running

    assert sorted(asyncio.run(main())) == list(range(parties))
