"""Restart faults: the Temporal dev server SIGKILLed (mid-task, parked at the gate,
mid-merge, racing an approval) and the API SIGKILLed while a decision is in flight.

A Temporal restart cannot be done to the session's shared dev server, so each of
these scenarios runs on a dev server of its own, with its own SQLite file, and
restarts it on the same address and database: the worker and the API must
reconnect by themselves, and the shared checker's invariants must hold.

An approval racing a restart (issue #12 item 9) is sent through the real API with an
`Idempotency-Key`; whatever the first answer (503, a dropped connection, a
timeout), the caller retries with the same key until it hears a definite answer,
which must say the approval took, applied once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
from temporalio.client import Client

from api.deps import USER_HEADER
from switchboard.errors import ServiceUnavailable
from switchboard.models import Phase, TaskStatus
from switchboard.settings import Settings
from switchboard.temporal import connect
from testkit import DevServerOnPort, free_port, status_of
from tests.faults.harness import (
    WORKERS,
    ApiProcess,
    Expected,
    Report,
    check_task,
    when,
    worktree_marks,
)
from tests.faults.scenarios import (
    COMPLETED,
    Handle,
    Scenario,
    Stack,
    approve,
    configure,
    start_task,
    submit_through_api,
    to_gate_and_approve,
)

RNG = random.Random(12)
"""Where in its window each race lands: seeded, so a soak is repeatable."""

OUTAGE_SECONDS = 1.0
"""How long the dev server stays down before it is started again."""


@dataclass
class Temporal:
    """A scenario's own dev server, SIGKILLed and restarted on the same address and
    SQLite file."""

    server: DevServerOnPort
    kills: int = 0

    async def restart(self, outage: float = OUTAGE_SECONDS) -> None:
        self.server.kill()
        self.kills += 1
        await asyncio.sleep(outage)
        await asyncio.to_thread(self.server.start)


@asynccontextmanager
async def own_temporal(stack: Stack) -> AsyncIterator[tuple[Stack, Temporal]]:
    """`stack` moved onto a dev server of its own: the worker process restarted
    against it (same process object, so its kills and cgroups are still counted)."""
    work = stack.settings.data_dir.parent / f"temporal-{uuid.uuid4().hex[:6]}"
    server = DevServerOnPort(work / "temporal.db")
    await asyncio.to_thread(server.start)
    temporal = Temporal(server)
    try:
        settings = stack.settings.model_copy(update={"temporal_address": server.address})
        client = await _connect_when_healthy(settings)
        stack.worker.stop()
        stack.worker.settings = settings
        stack.worker.start()
        yield replace(stack, client=client, settings=settings), temporal
    finally:
        stack.worker.stop()
        server.stop()


async def _connect_when_healthy(settings: Settings, timeout: float = 60) -> Client:
    """A client, once the dev server's frontend says it is healthy (its port opens first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await connect(settings)
        except ServiceUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def _with_kills(report: Report, temporal: Temporal) -> Report:
    report.temporal_kills += temporal.kills
    if temporal.kills == 0:
        report.problems.append("the dev server was never killed: nothing tested")
    return report


# ---- the dev server SIGKILLed in each phase --------------------------------------


async def temporal_mid_task(stack: Stack) -> Report:
    """Every worker is inside its first command when the dev server dies."""
    async with own_temporal(stack) as (stack, temporal):
        configure(stack)
        handle = await start_task(stack)
        await when(
            handle,
            lambda _: len(worktree_marks(stack.settings)) >= WORKERS,
            what="every worker inside its first command",
        )
        await temporal.restart()
        return _with_kills(await to_gate_and_approve(stack, handle), temporal)


async def temporal_parked_at_gate(stack: Stack) -> Report:
    async with own_temporal(stack) as (stack, temporal):
        configure(stack)
        handle = await start_task(stack)
        await when(
            handle, lambda s: s.phase is Phase.AWAITING_APPROVAL, timeout=240, what="the gate"
        )
        await temporal.restart()
        return _with_kills(await to_gate_and_approve(stack, handle), temporal)


async def temporal_mid_merge(stack: Stack) -> Report:
    """Approve, and kill the dev server as soon as the approval is applied (the merge
    is running, or just done)."""
    async with own_temporal(stack) as (stack, temporal):
        configure(stack)
        handle = await start_task(stack)
        await when(
            handle, lambda s: s.phase is Phase.AWAITING_APPROVAL, timeout=240, what="the gate"
        )
        approving = asyncio.create_task(approve(handle))
        await when(
            handle,
            lambda s: s.phase is not Phase.AWAITING_APPROVAL or approving.done(),
            what="the merge to start",
        )
        await temporal.restart()
        with contextlib.suppress(Exception):  # its answer may be cut off: the phase showed it took
            await approving
        report = await check_task(
            stack.client, stack.settings, stack.repo, handle.id, Expected(COMPLETED)
        )
        return _with_kills(report, temporal)


# ---- a decision racing a restart (item 9) ------------------------------------------


@dataclass
class Answers:
    """What the caller heard, attempt by attempt."""

    heard: list[str] = field(default_factory=list)
    final: httpx.Response | None = None


async def post_until_definite(
    http: httpx.AsyncClient,
    path: str,
    key: str,
    *,
    during: Callable[[], Coroutine[Any, Any, None]],
    attempts: int = 20,
) -> Answers:
    """POST the approval with `key`; `during` (the fault) runs beside the first attempt.
    Retries with the same key after a 503 or a lost connection, until an answer that
    is not "unconfirmed" (any other status), or `attempts` run out."""
    answers = Answers()
    headers = {USER_HEADER: "alice", "Idempotency-Key": key}
    body = {"comment": "ship it"}
    fault = asyncio.create_task(during())
    for attempt in range(attempts):
        try:
            response = await http.post(path, json=body, headers=headers)
        except httpx.TransportError as exc:
            answers.heard.append(type(exc).__name__)
        else:
            answers.heard.append(str(response.status_code))
            if response.status_code != 503:
                answers.final = response
                break
        if attempt == 0:
            await fault
        await asyncio.sleep(1)
    await fault
    return answers


def judge_answers(report: Report, task_id: str, answers: Answers, status: TaskStatus) -> None:
    """The caller must know whether its approval took: its last answer is a 200 with
    the approval record, and the task holds exactly that one approval."""
    applied = [a for a in status.approvals if a.decision == "approved"]
    final = answers.final
    report.notes.append(f"the caller heard {', '.join(answers.heard)}")
    if final is None:
        report.lost += 1
        report.problems.append(f"{task_id}: no definite answer after {answers.heard}")
    elif final.status_code != 200:
        report.false_reports += 1
        report.problems.append(
            f"{task_id}: heard {answers.heard}, last {final.status_code} {final.text[:200]!r} "
            f"though {len(applied)} approval(s) took"
        )
    elif final.json().get("decision") != "approved":
        report.false_reports += 1
        report.problems.append(f"{task_id}: a 200 without the approval record: {final.text}")


HOLD_SECONDS = 0.5
"""How long the approval waits at the server for the frozen worker before the fault."""


async def approve_racing(
    stack: Stack, fault: Callable[[ApiProcess], Coroutine[Any, Any, None]]
) -> Report:
    """A task at the gate; the worker is frozen (SIGSTOP), so the approval sent through
    the API waits at the server, in flight, while `fault` strikes and thaws the worker."""
    settings = stack.settings.model_copy(update={"api_port": free_port()})
    api = ApiProcess(settings, settings.data_dir.parent / f"api-{settings.api_port}.log")
    await asyncio.to_thread(api.start)
    try:
        configure(stack)
        async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as http:
            task_id = await submit_through_api(http, stack)
            handle: Handle = stack.client.get_workflow_handle(task_id)
            await when(
                handle, lambda s: s.phase is Phase.AWAITING_APPROVAL, timeout=240, what="the gate"
            )
            stack.worker.freeze()
            try:
                path = f"/v1/tasks/{task_id}/approve"
                key = uuid.uuid4().hex
                answers = await post_until_definite(http, path, key, during=lambda: fault(api))
            finally:
                stack.worker.thaw()
        report = await check_task(
            stack.client, stack.settings, stack.repo, task_id, Expected(COMPLETED)
        )
        judge_answers(report, task_id, answers, await status_of(handle))
        report.api_kills += api.kills
        return report
    finally:
        api.stop()


async def approval_racing_temporal(stack: Stack) -> Report:
    """The dev server is SIGKILLed either while it holds the approval for the frozen
    worker (lost with the server's memory) or a moment after the worker thaws (before,
    while or after it applies it, so the answer may never reach the caller)."""
    async with own_temporal(stack) as (own, temporal):
        when_killed: list[str] = []

        async def kill_temporal(_: ApiProcess) -> None:
            await asyncio.sleep(HOLD_SECONDS)
            lead = RNG.uniform(-0.3, 0.15)
            if lead < 0:
                when_killed.append("while the approval waited for the worker")
                await temporal.restart()
                own.worker.thaw()
            else:
                when_killed.append("as the worker took the approval")
                own.worker.thaw()
                await asyncio.sleep(lead)
                await temporal.restart()

        report = await approve_racing(own, kill_temporal)
        report.notes = [f"killed {w}; {n}" for w in when_killed for n in report.notes]
        return _with_kills(report, temporal)


async def approval_racing_api(stack: Stack) -> Report:
    """The API is SIGKILLed with the approval in flight, then the worker thaws and
    applies it with nobody left to hear the answer; the API is started again."""

    async def kill_api(api: ApiProcess) -> None:
        await asyncio.sleep(HOLD_SECONDS)
        api.kill()
        stack.worker.thaw()
        await asyncio.sleep(0.3)
        await asyncio.to_thread(api.start)

    report = await approve_racing(stack, kill_api)
    if report.api_kills == 0:
        report.problems.append("the API was never killed: nothing tested")
    return report


TEMPORAL_RESTARTS: dict[str, Scenario] = {
    "Temporal SIGKILL mid-task": temporal_mid_task,
    "Temporal SIGKILL parked at gate": temporal_parked_at_gate,
    "Temporal SIGKILL mid-merge": temporal_mid_merge,
    "approval racing a Temporal SIGKILL (item 9)": approval_racing_temporal,
}

DECISION_RESTARTS: dict[str, Scenario] = {
    "API SIGKILL with an approval in flight (item 9)": approval_racing_api,
}
