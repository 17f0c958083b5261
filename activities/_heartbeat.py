"""Heartbeat while an activity awaits something slow (a model, a command).

A heartbeat tells Temporal the worker is alive, so a lost worker is noticed
after `heartbeat_timeout` instead of the whole `start_to_close_timeout`, and a
cancellation reaches the activity at its next heartbeat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from temporalio import activity

__all__ = ["heartbeating"]

DEFAULT_INTERVAL_SECONDS = 5.0
"""Used when the activity has no heartbeat timeout (then heartbeats are cheap no-ops)."""

T = TypeVar("T")


def heartbeat_interval() -> float:
    """Half the current activity's heartbeat timeout, or the default."""
    timeout = activity.info().heartbeat_timeout
    if timeout:
        return max(timeout.total_seconds() / 2, 0.05)
    return DEFAULT_INTERVAL_SECONDS


async def heartbeating(awaitable: Awaitable[T], *details: Any) -> T:
    """Await `awaitable`, heartbeating (with `details`) until it is done.

    Cancellation of the activity cancels the awaited work and is re-raised.
    """
    interval = heartbeat_interval()
    work = asyncio.ensure_future(awaitable)
    try:
        while True:
            done, _ = await asyncio.wait({work}, timeout=interval)
            if done:
                return work.result()
            activity.heartbeat(*details)
    except asyncio.CancelledError:
        work.cancel()
        raise
