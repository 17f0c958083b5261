"""Mirror maintenance: `git gc` in every mirror of one host, started by a Temporal Schedule.

Each host keeps its own mirrors, so each has its own schedule
(`wire.mirror_gc_schedule_id(host_id)`, created at worker start by
`switchboard.temporal.ensure_mirror_gc_schedule`); the workflow runs on the shared
queue and sends the one activity to the host's queue. A run that overlaps the
previous one is skipped by the schedule; a host that is down when its run is due
has the activity wait for it (up to the schedule-to-close timeout), then the run
fails and the next one tries again.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from switchboard.contracts import GcMirrorsInput, GcMirrorsResult
    from switchboard.wire import Activities, Workflows

GC_TIMEOUT = timedelta(hours=1)
"""A gc of a large mirror takes minutes; a host that stays away this long misses a run."""
GC_RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(minutes=1))


@workflow.defn(name=Workflows.MIRROR_MAINTENANCE)
class MirrorMaintenanceWorkflow:
    @workflow.run
    async def run(self, input: GcMirrorsInput) -> GcMirrorsResult:
        result: GcMirrorsResult = await workflow.execute_activity(
            Activities.GC_MIRRORS,
            input,
            result_type=GcMirrorsResult,
            task_queue=input.host_queue,
            schedule_to_close_timeout=GC_TIMEOUT,
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=GC_RETRY,
            summary="git gc in this host's mirrors",
        )
        return result
