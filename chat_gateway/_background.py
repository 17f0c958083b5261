"""The gateway's background work (watchers, turns): logged if it fails, cancelled at close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from switchboard.errors import ServiceUnavailable

__all__ = ["Background", "consume"]

log = logging.getLogger("chat_gateway._gateway")


class Background:
    """A set of running tasks that logs each failure and cancels them all on `aclose`."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, finished: asyncio.Task[Any]) -> None:
        self._tasks.discard(finished)
        if not finished.cancelled() and finished.exception() is not None:
            error = finished.exception()
            level = logging.WARNING if isinstance(error, ServiceUnavailable) else logging.ERROR
            log.log(level, "gateway task failed: %s", error, exc_info=error)

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def consume(task: asyncio.Future[Any]) -> None:
    """Retrieve a shielded post's outcome: its caller may have left (it re-raises if not)."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("a post failed: %s", task.exception())
