"""Heartbeat while an activity awaits something slow (a model, a command).

A heartbeat tells Temporal the worker is alive, so a lost worker is noticed
after `heartbeat_timeout` instead of the whole `start_to_close_timeout`, and a
cancellation reaches the activity at its next heartbeat.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from temporalio import activity

from switchboard.step_heartbeat import StepHeartbeat, StepWaiting
from switchboard.wire import Signals, Workflows

__all__ = ["WaitNotice", "heartbeating"]

DEFAULT_INTERVAL_SECONDS = 5.0
"""Used when the activity has no heartbeat timeout (then heartbeats are cheap no-ops)."""

SETTLE_SECONDS = 30.0
"""How long a cancelled activity waits for its cancelled work to end (a killed
command's exit and cgroup removal take milliseconds)."""

T = TypeVar("T")


def heartbeat_interval() -> float:
    """Half the current activity's heartbeat timeout, or the default."""
    timeout = activity.info().heartbeat_timeout
    if timeout:
        return max(timeout.total_seconds() / 2, 0.05)
    return DEFAULT_INTERVAL_SECONDS


@dataclass(frozen=True)
class WaitNotice:
    """Tell a subagent's workflow that its step still waits, after `after` seconds and
    again at each doubling (30 s, 60 s, 120 s, ...): its task then shows an event, not
    only a heartbeat that no one reads unless they ask (a hanging model call would be
    silence until its timeout). Only for steps of a subagent workflow; a notice that
    cannot be sent is logged, never fails the step."""

    after: float

    def due(self, elapsed: float, sent: int) -> bool:
        return elapsed >= self.after * (1 << sent)

    async def send(self, beat: StepHeartbeat) -> None:
        info = activity.info()
        if info.workflow_type != Workflows.SUBAGENT or info.workflow_id is None:
            return
        elapsed = int((datetime.now(UTC) - beat.since).total_seconds())
        waiting = StepWaiting(message=beat.describe(), stage=beat.stage, seconds=elapsed)
        try:
            handle = activity.client().get_workflow_handle(info.workflow_id)
            await handle.signal(Signals.STEP_WAITING, waiting)
        except Exception as exc:  # a notice is best effort: the heartbeat still says it
            activity.logger.warning("could not say the step waits: %s", exc)


async def heartbeating(
    awaitable: Awaitable[T], *details: Any, notice: WaitNotice | None = None
) -> T:
    """Await `awaitable`, heartbeating (with `details`) until it is done; with a
    `notice` and a `StepHeartbeat` detail, also say so when the wait grows long.

    Cancellation of the activity cancels the awaited work and is re-raised once that
    work has settled (a command killed, its cgroup removed; still heartbeating, up to
    `SETTLE_SECONDS`): the cancel is acknowledged only when nothing of it runs on, since
    a cancelled subagent's task removes its files next (see `workflows._calls`). Work in
    a thread cannot be stopped; it is not waited for.
    """
    interval = heartbeat_interval()
    if notice is not None:
        interval = min(interval, notice.after)
    beat = next((d for d in details if isinstance(d, StepHeartbeat)), None)
    began, sent = time.monotonic(), 0
    work = asyncio.ensure_future(awaitable)
    try:
        while True:
            done, _ = await asyncio.wait({work}, timeout=interval)
            if done:
                return work.result()
            activity.heartbeat(*details)
            due = notice is not None and notice.due(time.monotonic() - began, sent)
            if notice is not None and beat is not None and due:
                sent += 1
                await notice.send(beat)
    except asyncio.CancelledError:
        work.cancel()
        await _settle(work, interval, details)
        raise


async def _settle(work: asyncio.Future[Any], interval: float, details: tuple[Any, ...]) -> None:
    """Wait (heartbeating) for cancelled `work` to end, at most `SETTLE_SECONDS`."""
    deadline = time.monotonic() + SETTLE_SECONDS
    try:
        while not work.done() and time.monotonic() < deadline:
            await asyncio.wait({work}, timeout=min(interval, deadline - time.monotonic()))
            if not work.done():
                activity.heartbeat(*details)
    except asyncio.CancelledError:
        pass  # cancelled again: stop waiting, the caller re-raises
