"""The Temporal client: one way to connect, with the pydantic data converter.

Both the client and the worker must use `pydantic_data_converter`, or the models
in `switchboard.models` arrive as plain dicts. Connecting costs one round trip
(~ms on one machine); create one client per process and share it.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime

from switchboard import wire
from switchboard.errors import ServiceUnavailable
from switchboard.settings import Settings

__all__ = ["CONNECT_TIMEOUT", "connect", "ensure_search_attributes"]

CONNECT_TIMEOUT = timedelta(seconds=5)


async def connect(
    settings: Settings, *, lazy: bool = False, runtime: Runtime | None = None
) -> Client:
    """A client for the configured Temporal server and namespace.

    Args:
        settings: Where Temporal is (`temporal_address`, `temporal_namespace`).
        lazy: Connect on first use instead of now. A long-lived server (the API)
            uses this so it starts, and answers 503, while Temporal is down.

    Raises:
        ServiceUnavailable: Nothing answered at `temporal_address` (eager mode).
    """
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            data_converter=pydantic_data_converter,
            connect_timeout=CONNECT_TIMEOUT,
            lazy=lazy,
            runtime=runtime,
        )
    except RuntimeError as exc:
        raise ServiceUnavailable.unreachable(settings.temporal_address) from exc


async def ensure_search_attributes(client: Client, namespace: str) -> list[str]:
    """Register Switchboard's search attributes in `namespace` if they are missing.

    Idempotent: a dev server started with `--search-attribute` flags already has
    them, and then this is one read.

    Returns:
        The names that were added (empty when all were present).
    """
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    present = set(listed.custom_attributes) | set(listed.system_attributes)
    missing = {
        key.name: IndexedValueType.ValueType(int(key.indexed_value_type))
        for key in wire.SearchAttributes.ALL
        if key.name not in present
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(search_attributes=missing, namespace=namespace)
        )
    return sorted(missing)


async def ensure_mirror_gc_schedule(client: Client, settings: Settings) -> bool:
    """Create this host's mirror gc schedule unless it exists; whether it was created.

    Idempotent: every worker of a host calls it at start, and the first one wins.
    Changing the interval later needs the schedule deleted (`temporal schedule delete`).
    """
    from temporalio.client import (
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleAlreadyRunningError,
        ScheduleIntervalSpec,
        ScheduleOverlapPolicy,
        SchedulePolicy,
        ScheduleSpec,
    )

    from switchboard.contracts import GcMirrorsInput

    schedule_id = wire.mirror_gc_schedule_id(settings.host_id)
    every = timedelta(hours=settings.mirror_gc_interval_hours)
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            wire.Workflows.MIRROR_MAINTENANCE,
            GcMirrorsInput(
                host_queue=settings.host_queue, prune_hours=settings.mirror_gc_prune_hours
            ),
            id=f"{schedule_id}-run",
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:
        return False
    return True
