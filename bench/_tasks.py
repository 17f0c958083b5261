"""Driving whole tasks through Switchboard and reading their histories afterwards.

Timings come from the histories (event times are the server's clock, on this
machine), so measuring does not disturb what is measured: the task's own status
query is polled gently and only to know when to stop waiting.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from temporalio.api.enums.v1 import TimeoutType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle

from switchboard.models import Phase, TaskRequest, TaskResult, TaskStatus
from switchboard.settings import Settings
from switchboard.wire import Activities, Queries, Workflows


def new_task_id() -> str:
    return f"task-{uuid.uuid4().hex}"


async def start_task(
    client: Client, settings: Settings, request: TaskRequest, task_id: str | None = None
) -> WorkflowHandle[object, TaskResult]:
    return await client.start_workflow(
        Workflows.TASK,
        request,
        id=task_id or new_task_id(),
        task_queue=settings.task_queue,
        result_type=TaskResult,
    )


async def status(handle: WorkflowHandle[object, TaskResult]) -> TaskStatus | None:
    try:
        result: TaskStatus = await handle.query(Queries.STATUS, result_type=TaskStatus)
    except Exception:  # the first workflow task may not have run yet
        return None
    return result


async def wait_phase(
    handle: WorkflowHandle[object, TaskResult],
    phase: Phase,
    *,
    timeout: float = 300.0,
    poll: float = 0.25,
) -> TaskStatus:
    deadline = time.monotonic() + timeout
    last: TaskStatus | None = None
    while time.monotonic() < deadline:
        last = await status(handle)
        if last is not None and last.phase is phase:
            return last
        if last is not None and last.phase.is_final:
            raise RuntimeError(f"{handle.id} ended {last.phase.value}: {last.error}")
        await asyncio.sleep(poll)
    raise TimeoutError(f"{handle.id} not {phase.value} within {timeout} s (last: {last})")


def event_time(event: HistoryEvent) -> float:
    stamp: datetime = event.event_time.ToDatetime()
    return stamp.timestamp()


@dataclass
class HistoryProfile:
    """Where a task's time went, by Temporal's own account."""

    workflows: int = 0
    events: int = 0
    history_bytes: int = 0
    largest_event_bytes: int = 0
    activities: Counter[str] = field(default_factory=Counter)
    workflow_tasks: int = 0
    signals_sent: int = 0
    wft_timeouts: Counter[str] = field(default_factory=Counter)
    """Workflow tasks that timed out, by kind (start-to-close: a worker died holding one)."""
    wft_schedule_to_start: list[float] = field(default_factory=list)
    wft_processing: list[float] = field(default_factory=list)
    activity_schedule_to_start: list[float] = field(default_factory=list)
    activity_run: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    completed_at: list[float] = field(default_factory=list)
    """Event times of every activity completion and child completion (progress marks)."""
    llm_spans: list[tuple[float, float]] = field(default_factory=list)
    """(scheduled, closed) of every activity that calls the model (`subagent_step`)."""
    first_event: float = float("inf")
    """When the task's workflow started (its first history event)."""

    @property
    def to_first_model_call(self) -> float:
        """Seconds from the task's start to its first model call being scheduled."""
        return min(s for s, _ in self.llm_spans) - self.first_event if self.llm_spans else 0.0

    @staticmethod
    def median_ms(values: list[float]) -> float:
        return statistics.median(values) * 1000 if values else 0.0

    def describe(self) -> str:
        acts = sum(self.activities.values())
        return (
            f"{self.workflows} workflows, {self.events} history events "
            f"({self.history_bytes / 1024:.0f} KiB, largest event "
            f"{self.largest_event_bytes / 1024:.1f} KiB), {acts} activities, "
            f"{self.workflow_tasks} workflow tasks, {self.signals_sent} progress signals; "
            f"median workflow task schedule→start {self.median_ms(self.wft_schedule_to_start):.1f} "
            f"ms, processing {self.median_ms(self.wft_processing):.1f} ms; activity "
            f"schedule→start {self.median_ms(self.activity_schedule_to_start):.1f} ms"
        )


async def profile_task(client: Client, task_id: str) -> HistoryProfile:
    """Read the task's history and its children's, and add them up."""
    profile = HistoryProfile()
    pending = [task_id]
    seen: set[str] = set()
    while pending:
        workflow_id = pending.pop()
        if workflow_id in seen:
            continue
        seen.add(workflow_id)
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        profile.workflows += 1
        _add_history(profile, history.events, pending)
    return profile


_WORKFLOW_TASK = (
    "workflow_task_started_event_attributes",
    "workflow_task_completed_event_attributes",
)


def _add_workflow_task(
    profile: HistoryProfile, event: HistoryEvent, kind: str, by_id: dict[int, HistoryEvent]
) -> None:
    """A workflow task started (its wait to be picked up) or completed (its processing)."""
    at = event_time(event)
    if kind == "workflow_task_started_event_attributes":
        scheduled = by_id[event.workflow_task_started_event_attributes.scheduled_event_id]
        profile.wft_schedule_to_start.append(at - event_time(scheduled))
        profile.workflow_tasks += 1
    else:
        started = by_id[event.workflow_task_completed_event_attributes.started_event_id]
        profile.wft_processing.append(at - event_time(started))


_ACTIVITY_CLOSED = (
    "activity_task_completed_event_attributes",
    "activity_task_failed_event_attributes",
    "activity_task_timed_out_event_attributes",
)


def _add_activity_closed(
    profile: HistoryProfile,
    event: HistoryEvent,
    kind: str,
    by_id: dict[int, HistoryEvent],
    activity_type: dict[int, str],
) -> None:
    """An activity attempt ended: its run time, and its span if it called the model."""
    at = event_time(event)
    closed = getattr(event, kind)
    scheduled_id = closed.scheduled_event_id
    name = activity_type.get(scheduled_id, "?")
    began = by_id.get(closed.started_event_id)
    if began is not None:
        profile.activity_run[name].append(at - event_time(began))
    if kind == "activity_task_completed_event_attributes":
        profile.completed_at.append(at)
    if name == Activities.SUBAGENT_STEP:
        profile.llm_spans.append((event_time(by_id[scheduled_id]), at))


def _add_history(
    profile: HistoryProfile, events: Sequence[HistoryEvent], children: list[str]
) -> None:
    by_id = {e.event_id: e for e in events}
    activity_type: dict[int, str] = {}
    for event in events:
        kind = event.WhichOneof("attributes") or ""
        size = event.ByteSize()
        profile.events += 1
        profile.history_bytes += size
        profile.largest_event_bytes = max(profile.largest_event_bytes, size)
        at = event_time(event)
        profile.first_event = min(profile.first_event, at)
        if kind in _WORKFLOW_TASK:
            _add_workflow_task(profile, event, kind, by_id)
        elif kind == "activity_task_scheduled_event_attributes":
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            activity_type[event.event_id] = name
            profile.activities[name] += 1
        elif kind == "activity_task_started_event_attributes":
            scheduled = by_id[event.activity_task_started_event_attributes.scheduled_event_id]
            profile.activity_schedule_to_start.append(at - event_time(scheduled))
        elif kind in _ACTIVITY_CLOSED:
            _add_activity_closed(profile, event, kind, by_id, activity_type)
        elif kind == "child_workflow_execution_started_event_attributes":
            child = event.child_workflow_execution_started_event_attributes
            children.append(child.workflow_execution.workflow_id)
        elif kind == "child_workflow_execution_completed_event_attributes":
            profile.completed_at.append(at)
        elif kind == "signal_external_workflow_execution_initiated_event_attributes":
            profile.signals_sent += 1
        elif kind == "workflow_task_timed_out_event_attributes":
            timeout = event.workflow_task_timed_out_event_attributes.timeout_type
            profile.wft_timeouts[TimeoutType.Name(timeout)] += 1
