"""Per-tenant limits: concurrent tasks, parallel subagents, model tokens per day.

Nothing here keeps a count of its own. Every check reads Temporal, which every API
process shares and which survives their restarts:

- **concurrent tasks**: `count_workflows` of the tenant's running tasks
  (`SwitchboardTenant`, `ExecutionStatus = 'Running'`), tasks parked at the approval
  gate included;
- **tokens per day**: the sum of `SwitchboardTokens` (set by each task workflow at
  every phase change, `workflows._usage`) over the tenant's tasks that are running or
  ended since 00:00 UTC;
- **parallel subagents**: not counted at all but passed in the task's input: the
  task's `max_parallel` (its fan-out) is lowered to the tenant's cap, and the
  submitter is told so.

A refused submit is `LimitExceeded` (HTTP 429 with `Retry-After`), whose message names
the limit. Visibility lags a moment, so a burst of submits from several processes can
overshoot a limit by a few tasks; work beyond the fleet's capacity is never refused
here, it queues in Temporal. Cost: one visibility call per configured limit per submit
(the token sum lists the tenant's tasks of the day).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import Field
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from switchboard import wire
from switchboard._task_views import quote
from switchboard.errors import LimitExceeded
from switchboard.models import MAX_PARALLEL, Model, TaskRequest

__all__ = ["CONCURRENT_RETRY_SECONDS", "TenantLimiter", "TenantLimits", "seconds_to_midnight"]

CONCURRENT_RETRY_SECONDS = 30
"""`Retry-After` when the tenant runs its most tasks: a guess, a task takes minutes."""


class TenantLimits(Model):
    """One tenant's limits; `None` is no limit."""

    concurrent_tasks: int | None = Field(default=None, ge=1, le=100_000)
    """Tasks the tenant may have running at once (awaiting approval counts)."""
    parallel_subagents: int | None = Field(default=None, ge=1, le=MAX_PARALLEL)
    """The most subagents one of the tenant's tasks runs at once."""
    tokens_per_day: int | None = Field(default=None, ge=1)
    """Model tokens the tenant's tasks may spend per UTC day; past it, no new task."""


def seconds_to_midnight(now: datetime) -> int:
    """Whole seconds until the next 00:00 UTC (at least 1)."""
    now = now.astimezone(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - now).total_seconds() + 0.999))


class TenantLimiter:
    """Checks a submit against its tenant's limits (see the module docstring).

    Args:
        client: The Temporal client (visibility).
        limits: Limits by tenant name.
        default: The limits of every tenant not named in `limits`.
    """

    def __init__(
        self, client: Client, limits: dict[str, TenantLimits], default: TenantLimits
    ) -> None:
        self._client = client
        self._limits = limits
        self._default = default

    def limits_for(self, tenant: str) -> TenantLimits:
        return self._limits.get(tenant, self._default)

    async def admit(
        self, request: TaskRequest, tenant: str, task_id: str
    ) -> tuple[TaskRequest, str | None]:
        """The request as it may run (fan-out capped), and a notice when it was capped.

        A retry of a request id whose task `task_id` has started is never refused: it
        goes on to find that task.

        Raises:
            LimitExceeded: The tenant runs its most tasks, or has spent its tokens today.
        """
        limits = self.limits_for(tenant)
        try:
            await self._check_counts(tenant, limits)
        except LimitExceeded:
            if request.request_id is None or not await self._started(task_id):
                raise
        cap = limits.parallel_subagents
        if cap is None or request.max_parallel <= cap:
            return request, None
        notice = (
            f"max_parallel lowered from {request.max_parallel} to {cap}: the limit on "
            f"parallel subagents of tenant '{tenant}'"
        )
        return request.model_copy(update={"max_parallel": cap}), notice

    async def _check_counts(self, tenant: str, limits: TenantLimits) -> None:
        if limits.concurrent_tasks is not None:
            running = await self.running_tasks(tenant)
            if running >= limits.concurrent_tasks:
                raise LimitExceeded(
                    f"limit on concurrent tasks reached: tenant '{tenant}' has {running} "
                    f"tasks running and may run {limits.concurrent_tasks} at once; wait for "
                    "one to end (or cancel one) and retry",
                    retry_after=CONCURRENT_RETRY_SECONDS,
                )
        if limits.tokens_per_day is not None:
            now = datetime.now(UTC)
            spent = await self.tokens_today(tenant, now)
            if spent >= limits.tokens_per_day:
                raise LimitExceeded(
                    f"limit on model tokens per day reached: tenant '{tenant}' has spent "
                    f"{spent} tokens today (UTC) of {limits.tokens_per_day}; new tasks are "
                    "accepted again after 00:00 UTC",
                    retry_after=seconds_to_midnight(now),
                )

    async def _started(self, task_id: str) -> bool:
        try:
            await self._client.get_workflow_handle(task_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def running_tasks(self, tenant: str) -> int:
        query = f"{_tasks_of(tenant)} AND ExecutionStatus = 'Running'"
        return (await self._client.count_workflows(query)).count

    async def tokens_today(self, tenant: str, now: datetime) -> int:
        """Tokens recorded by the tenant's tasks running now or ended since 00:00 UTC."""
        midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        since = midnight.strftime("%Y-%m-%dT%H:%M:%SZ")
        query = (
            f"{_tasks_of(tenant)} AND (ExecutionStatus = 'Running' OR CloseTime >= {quote(since)})"
        )
        spent = 0
        async for execution in self._client.list_workflows(query):
            spent += execution.typed_search_attributes.get(wire.SearchAttributes.TOKENS) or 0
        return spent


def _tasks_of(tenant: str) -> str:
    return (
        f"WorkflowType = {quote(wire.Workflows.TASK)} AND "
        f"{wire.SearchAttributes.TENANT.name} = {quote(tenant)}"
    )
