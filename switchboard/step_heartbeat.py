"""What a running subagent step is waiting on, as its activity's heartbeat details.

The step activity heartbeats a `StepHeartbeat` while it waits on the model or on
a tool command, so whoever describes the subagent's workflow (its pending
activity's `heartbeat_details`) can say "waiting on the model for 42 s" instead
of showing nothing for the length of a hanging call. The workflow itself cannot
read these (heartbeats never enter history); readers decode them with the
client's data converter.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from enum import StrEnum

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client
from temporalio.service import RPCError

from switchboard import wire
from switchboard.models import Model, SubagentState, TaskStatus


class StepStage(StrEnum):
    SANDBOX = "sandbox"
    MODEL = "model"
    TOOL = "tool"
    ROLLBACK = "rollback"


class StepHeartbeat(Model):
    stage: StepStage
    since: datetime
    """When the wait began (the worker host's clock, UTC)."""
    tool: str | None = None
    role: str | None = None

    @classmethod
    def now(
        cls, stage: StepStage, *, tool: str | None = None, role: str | None = None
    ) -> StepHeartbeat:
        return cls(stage=stage, since=datetime.now(UTC), tool=tool, role=role)

    def describe(self, at: datetime | None = None) -> str:
        """ "waiting on the model for 42 s", "running the tool run for 3 s", ..."""
        elapsed = max(0, int(((at or datetime.now(UTC)) - self.since).total_seconds()))
        what = {
            StepStage.SANDBOX: "starting the sandbox",
            StepStage.MODEL: "waiting on the model",
            StepStage.TOOL: f"running the tool {self.tool or '?'}",
            StepStage.ROLLBACK: "rolling back an interrupted tool call",
        }[self.stage]
        return f"{what} for {elapsed} s"


class StepWaiting(Model):
    """Signal payload (`Signals.STEP_WAITING`): a step still waits, said once per doubling."""

    message: str
    """ "waiting on the model for 30 s" """
    stage: StepStage
    seconds: int


async def step_wait(client: Client, workflow_id: str) -> str | None:
    """What the running step of one subagent workflow waits on, if it says so."""
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
    except RPCError:
        return None
    for pending in described.raw_description.pending_activities:
        started = pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        if not started or not pending.heartbeat_details.payloads:
            continue
        try:
            [beat] = await client.data_converter.decode(
                pending.heartbeat_details.payloads[:1], [StepHeartbeat]
            )
        except Exception:  # another activity's details: nothing to show
            continue
        if isinstance(beat, StepHeartbeat):
            return beat.describe()
    return None


async def fill_waits(client: Client, status: TaskStatus) -> TaskStatus:
    """Set `waiting` on each running subagent of `status` (one describe each, at once)."""
    running = [s for s in status.subagents if s.state is SubagentState.RUNNING]
    waits = await asyncio.gather(
        *(
            step_wait(client, wire.subagent_workflow_id(status.task_id, s.index, s.round))
            for s in running
        )
    )
    for subagent, wait in zip(running, waits, strict=True):
        subagent.waiting = wait
    return status
