"""What a running subagent step is waiting on, as its activity's heartbeat details.

The step activity heartbeats a `StepHeartbeat` while it waits on the model or on
a tool command, so whoever describes the subagent's workflow (its pending
activity's `heartbeat_details`) can say "waiting on the model for 42 s" instead
of showing nothing for the length of a hanging call. The workflow itself cannot
read these (heartbeats never enter history); readers decode them with the
client's data converter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from switchboard.models import Model


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
