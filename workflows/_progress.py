"""How a subagent batches its progress reports to the parent task: pure, no Temporal.

A step that ends within `interval` of the last report is held and goes out with the
next report, as one "N steps: ..." report. A model turn takes seconds, so real steps
are reported one by one; fast ones (a scripted model) are batched, each report a
workflow task less for the parent and for the subagent. Any other kind of report
("denied") first releases what is held, so the parent sees events in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

PROGRESS_INTERVAL = timedelta(seconds=1)
STEP = "step"
WAITING = "waiting"


@dataclass(frozen=True)
class Report:
    kind: str
    message: str
    data: dict[str, object] = field(default_factory=dict)


class ProgressBatcher:
    def __init__(self, interval: timedelta = PROGRESS_INTERVAL) -> None:
        self._interval = interval
        self._last_sent: datetime | None = None
        self._held: list[tuple[str, list[dict[str, object]]]] = []

    @property
    def holding(self) -> int:
        """How many step reports are held."""
        return len(self._held)

    def offer(self, report: Report, now: datetime) -> list[Report]:
        """The reports to send now, in order, for `report` arriving at `now`."""
        if report.kind == STEP:
            recent = self._last_sent is not None and now - self._last_sent < self._interval
            if recent or self._held:
                self._held.append((report.message, _tools_of(report.data)))
            if recent:
                return []
            out = [self._take_held()] if self._held else [report]
        else:
            out = [*self.release(), report]
        self._last_sent = now
        return out

    def release(self) -> list[Report]:
        """The held step reports as one report (or nothing held: none)."""
        return [self._take_held()] if self._held else []

    def _take_held(self) -> Report:
        held, self._held = self._held, []
        if len(held) == 1:
            return Report(STEP, held[0][0], {"tools": held[0][1]})
        tools = [used for _, step_tools in held for used in step_tools]
        message = f"{len(held)} steps: " + "; ".join(message for message, _ in held)
        return Report(STEP, message, {"tools": tools, "batched_steps": len(held)})


def _tools_of(data: dict[str, object]) -> list[dict[str, object]]:
    tools = data.get("tools")
    return list(tools) if isinstance(tools, list) else []
