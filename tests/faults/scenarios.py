"""The fault scenarios, each a coroutine that runs one task through one fault on the
real stack and returns the end-of-run checker's report. The tests run each once;
`make soak` (tests/faults/soak.py) runs them for many rounds and writes the table."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from api.deps import USER_HEADER
from switchboard.model_server import ModelServerHandle, ScriptedRole
from switchboard.models import (
    ApprovalRecord,
    ApproveInput,
    Phase,
    RequestChangesInput,
    Role,
    SubagentState,
    TaskRequest,
    TaskResult,
    TaskStatus,
)
from switchboard.settings import Settings
from switchboard.wire import Updates, Workflows
from testkit import free_port, git
from tests.faults.harness import (
    WORKERS,
    ApiProcess,
    Expected,
    Report,
    WorkerProcess,
    check_task,
    fault_scenario,
    when,
    worktree_marks,
)

SLOW_MS = 2500
"""Latency given to the role whose phase a scenario interrupts, so the fault lands in it."""


@dataclass
class Stack:
    client: Client
    settings: Settings
    worker: WorkerProcess
    model: ModelServerHandle
    repo: Path


Handle = WorkflowHandle[object, TaskResult]
Scenario = Callable[[Stack], Awaitable[Report]]


async def start_task(stack: Stack, *, goal: str = "Mark the logs") -> Handle:
    return await stack.client.start_workflow(
        Workflows.TASK,
        TaskRequest(goal=goal, repo=str(stack.repo), review=True),
        id=f"task-{uuid.uuid4().hex}",
        task_queue=stack.settings.task_queue,
        result_type=TaskResult,
    )


async def approve(handle: Handle) -> ApprovalRecord:
    record: ApprovalRecord = await handle.execute_update(
        Updates.APPROVE, ApproveInput(by="ops"), result_type=ApprovalRecord
    )
    return record


async def to_gate_and_approve(
    stack: Stack, handle: Handle, expected: Expected | None = None
) -> Report:
    await when(handle, lambda s: s.phase is Phase.AWAITING_APPROVAL, timeout=240, what="the gate")
    await approve(handle)
    return await check_task(
        stack.client, stack.settings, stack.repo, handle.id, expected or Expected(COMPLETED)
    )


COMPLETED = Phase.COMPLETED


def configure(stack: Stack, *, slow: ScriptedRole | None = None, explorer: bool = False) -> None:
    stack.model.reset()
    stack.model.set_scenario(fault_scenario(explorer=explorer))
    latency = {slow.value: SLOW_MS} if slow is not None else {}
    stack.model.configure(latency_ms=0, token_rate=0, role_latency_ms=latency)


def _workers_done(status: TaskStatus) -> bool:
    workers = [s for s in status.subagents if s.role is Role.WORKER]
    return bool(workers) and all(s.state is SubagentState.DONE for s in workers)


# ---- worker SIGKILL in each phase ------------------------------------------------


async def kill_in_planning(stack: Stack) -> Report:
    configure(stack, slow=ScriptedRole.PLANNER)
    handle = await start_task(stack)
    await when(
        handle,
        lambda s: (
            s.phase is Phase.PLANNING and stack.model.stats()["by_role"].get("planner", 0) > 0
        ),
        what="the planner's call",
    )
    await stack.worker.restart()
    stack.model.configure(role_latency_ms={})
    return await to_gate_and_approve(stack, handle)


async def kill_mid_command(stack: Stack) -> Report:
    configure(stack)
    handle = await start_task(stack)
    await when(
        handle,
        lambda _: len(worktree_marks(stack.settings)) >= WORKERS,
        what="every worker inside its first command",
    )
    await stack.worker.restart()  # the first command sleeps: the kill lands inside it
    everyone = frozenset(range(1, WORKERS + 1))
    return await to_gate_and_approve(stack, handle, Expected(COMPLETED, interrupted=everyone))


async def kill_at_integrate(stack: Stack) -> Report:
    configure(stack, slow=ScriptedRole.REVIEWER)
    handle = await start_task(stack)
    await when(handle, _workers_done, what="every worker done")
    await stack.worker.restart()  # integration (and the review) are in flight
    stack.model.configure(role_latency_ms={})
    return await to_gate_and_approve(stack, handle)


async def kill_in_review(stack: Stack) -> Report:
    configure(stack, slow=ScriptedRole.REVIEWER)
    handle = await start_task(stack)
    await when(
        handle,
        lambda s: (
            s.phase is Phase.REVIEWING and stack.model.stats()["by_role"].get("reviewer", 0) > 0
        ),
        what="the reviewer's call",
    )
    await stack.worker.restart()
    stack.model.configure(role_latency_ms={})
    return await to_gate_and_approve(stack, handle)


async def kill_parked_at_gate(stack: Stack) -> Report:
    configure(stack)
    handle = await start_task(stack)
    await when(handle, lambda s: s.phase is Phase.AWAITING_APPROVAL, timeout=240, what="the gate")
    await stack.worker.restart()
    return await to_gate_and_approve(stack, handle)


async def kill_mid_merge(stack: Stack) -> Report:
    """Approve, and kill the worker as soon as the merge starts (or right after the
    approval is accepted, when the merge is already past)."""
    configure(stack)
    handle = await start_task(stack)
    await when(handle, lambda s: s.phase is Phase.AWAITING_APPROVAL, timeout=240, what="the gate")
    approving = asyncio.create_task(approve(handle))
    await when(
        handle,
        lambda s: s.phase is not Phase.AWAITING_APPROVAL or approving.done(),
        what="the merge to start",
    )
    await stack.worker.restart()
    await approving
    return await check_task(
        stack.client, stack.settings, stack.repo, handle.id, Expected(COMPLETED)
    )


WORKER_KILLS: dict[str, Scenario] = {
    "worker SIGKILL in planning": kill_in_planning,
    "worker SIGKILL mid-command": kill_mid_command,
    "worker SIGKILL at integrate": kill_at_integrate,
    "worker SIGKILL in review": kill_in_review,
    "worker SIGKILL parked at gate": kill_parked_at_gate,
    "worker SIGKILL mid-merge": kill_mid_merge,
}


# ---- model faults ----------------------------------------------------------------


def model_fault(kind: str, role: ScriptedRole, count: int) -> Scenario:
    """A burst of `count` faults of `kind` on `role`'s calls: the task still completes."""

    async def run(stack: Stack) -> Report:
        configure(stack)
        stack.model.add_fault(kind, role=role.value, count=count)
        handle = await start_task(stack)
        return await to_gate_and_approve(stack, handle)

    return run


MODEL_FAULTS: dict[str, Scenario] = {
    "worker model 429 burst": model_fault("http_429", ScriptedRole.WORKER, 3),
    "worker model 500s": model_fault("http_500", ScriptedRole.WORKER, 3),
    "worker model hang": model_fault("hang", ScriptedRole.WORKER, 1),
    "planner 429 burst (item 7)": model_fault("http_429", ScriptedRole.PLANNER, 3),
    "planner 500s (item 7)": model_fault("http_500", ScriptedRole.PLANNER, 3),
}


def persistent_model_fault(kind: str) -> Scenario:
    """Every worker call fails for good while the explorer succeeds: the task must
    not complete (issue #12 item 2); it fails or stops at the gate marked partial."""

    async def run(stack: Stack) -> Report:
        configure(stack, explorer=True)
        stack.model.add_fault(kind, role=ScriptedRole.WORKER.value, count=100_000)
        handle = await start_task(stack)
        status = await when(
            handle,
            lambda s: s.phase.is_final or s.phase is Phase.AWAITING_APPROVAL,
            timeout=240,
            what="the task to end or park",
        )
        report = Report(tasks=0)
        if status.phase is Phase.AWAITING_APPROVAL:
            failed = [s for s in status.subagents if s.state is SubagentState.FAILED]
            if not status.error or not failed:
                report.false_reports += 1
                report.problems.append(
                    f"{handle.id}: parked at the gate looking healthy with every worker failed"
                )
            await handle.cancel()
            expected = Expected(Phase.CANCELLED)
        else:
            expected = Expected(Phase.FAILED)
        report.add(await check_task(stack.client, stack.settings, stack.repo, handle.id, expected))
        return report

    return run


PERSISTENT_FAULTS: dict[str, Scenario] = {
    "every worker 401 (item 2)": persistent_model_fault("http_401"),
    "every worker 500 (item 2)": persistent_model_fault("http_500"),
    "every worker malformed tool calls (item 2)": persistent_model_fault("malformed_tool_json"),
}


# ---- cancel ----------------------------------------------------------------------


def cancel_in(phase: Phase, slow: ScriptedRole | None) -> Scenario:
    """Cancel while the task is in `phase`: it ends cancelled (issue #12 item 3)."""

    async def run(stack: Stack) -> Report:
        configure(stack, slow=slow)
        handle = await start_task(stack)
        await when(handle, lambda s: s.phase is phase, timeout=240, what=str(phase))
        await handle.cancel()
        if phase is not Phase.AWAITING_APPROVAL:
            status = await when(
                handle,
                lambda s: s.phase.is_final or s.phase is Phase.AWAITING_APPROVAL,
                timeout=240,
                what="the cancel to land",
            )
            if status.phase is Phase.AWAITING_APPROVAL:  # swallowed; a second cancel is void
                await handle.terminate("fault suite: the cancel was swallowed")
                problem = f"{handle.id}: cancelled in {phase}, parked at the gate instead"
                return Report(tasks=1, lost=1, problems=[problem])
        return await check_task(
            stack.client, stack.settings, stack.repo, handle.id, Expected(Phase.CANCELLED)
        )

    return run


async def cancel_mid_merge(stack: Stack) -> Report:
    configure(stack)
    handle = await start_task(stack)
    await when(handle, lambda s: s.phase is Phase.AWAITING_APPROVAL, timeout=240, what="the gate")
    approving = asyncio.create_task(approve(handle))
    await when(
        handle,
        lambda s: s.phase is not Phase.AWAITING_APPROVAL or approving.done(),
        what="the merge",
    )
    try:
        await handle.cancel()
        expected = Expected(Phase.CANCELLED)
    except RPCError:
        # The merge won the race and the task had ended: completed is the honest end.
        expected = Expected(Phase.COMPLETED)
    await approving
    return await check_task(stack.client, stack.settings, stack.repo, handle.id, expected)


CANCELS: dict[str, Scenario] = {
    "cancel in planning (item 3)": cancel_in(Phase.PLANNING, ScriptedRole.PLANNER),
    "cancel in review (item 3)": cancel_in(Phase.REVIEWING, ScriptedRole.REVIEWER),
    "cancel at the gate": cancel_in(Phase.AWAITING_APPROVAL, None),
    "cancel mid-merge (item 3)": cancel_mid_merge,
}


# ---- API restart under SSE -------------------------------------------------------

EVENTS_PER_CONNECTION = 3
"""The API is SIGKILLed under an open stream after this many new events."""


@dataclass
class _Stream:
    events: list[tuple[int, str, str]]
    ended: bool = False
    errors: int = 0


async def _read(
    http: httpx.AsyncClient, path: str, stream: _Stream, api: ApiProcess | None = None
) -> None:
    """One connection: resume after the last event; SIGKILL `api` after a few new ones."""
    headers = {USER_HEADER: "alice"}
    if stream.events:
        headers["Last-Event-ID"] = str(stream.events[-1][0])
    fresh = 0
    fields: dict[str, str] = {}
    try:
        async with http.stream("GET", path, headers=headers) as response:
            assert response.status_code == 200, (await response.aread()).decode()
            async for line in response.aiter_lines():
                if line and not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                    continue
                if line or "data" not in fields:
                    continue
                if fields.get("event") == "error":
                    stream.errors += 1
                else:
                    stream.events.append((int(fields["id"]), fields["event"], fields["data"]))
                    fresh += 1
                fields = {}
                if api is not None and fresh >= EVENTS_PER_CONNECTION:
                    api.kill()  # under the open stream
                    break
            else:
                stream.ended = True
    except (httpx.TransportError, httpx.RemoteProtocolError):
        pass
    if api is not None and api.process is not None and api.process.poll() is not None:
        api.start()


async def submit_through_api(http: httpx.AsyncClient, stack: Stack) -> str:
    """Delegate the scenario's task (reviewed) through the API as alice; its task id."""
    created = await http.post(
        "/v1/tasks",
        json={"goal": "Mark the logs", "repo": str(stack.repo), "review": True},
        headers={USER_HEADER: "alice"},
    )
    assert created.status_code == 201, created.text
    task_id: str = created.json()["task_id"]
    return task_id


async def api_restart_under_sse(stack: Stack) -> Report:
    """The API is SIGKILLed under an open SSE stream every few events; the client
    reconnects with Last-Event-ID and must see every event once, in order."""
    configure(stack)
    settings = stack.settings.model_copy(update={"api_port": free_port()})
    api = ApiProcess(settings, settings.data_dir.parent / "api.log")
    api.start()
    report = Report(tasks=0)
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as http:
            task_id = await submit_through_api(http, stack)
            handle: Handle = stack.client.get_workflow_handle(task_id, result_type=TaskResult)
            stream = _Stream(events=[])
            path = f"/v1/tasks/{task_id}/events"
            approving = asyncio.create_task(_approve_at_gate(handle, api.base_url))
            for _ in range(200):
                await _read(http, path, stream, api)
                if stream.ended:
                    break
            await approving
            report.add(
                await check_task(
                    stack.client, stack.settings, stack.repo, task_id, Expected(COMPLETED)
                )
            )
            async with asyncio.timeout(60):
                whole = _Stream(events=[])
                while not whole.ended:
                    await _read(http, path, whole)
        _check_stream(report, task_id, stream, whole)
        report.api_kills += api.kills
    finally:
        api.stop()
    if api.kills == 0:
        report.problems.append("the API was never killed under the stream: nothing tested")
    return report


async def _approve_at_gate(handle: Handle, base_url: str) -> None:
    """Approve through the API (a task submitted there holds its submitter's policy, so
    only a decision with a verified caller's claim is taken), whose process is being
    killed under the stream: retried with one Idempotency-Key until it answers 200."""
    await when(handle, lambda s: s.phase is Phase.AWAITING_APPROVAL, timeout=240, what="the gate")
    headers = {USER_HEADER: "alice", "Idempotency-Key": uuid.uuid4().hex}
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        for _ in range(60):
            try:
                answer = await http.post(f"/v1/tasks/{handle.id}/approve", headers=headers)
            except httpx.TransportError:
                answer = None
            if answer is not None and answer.status_code != 503:
                assert answer.status_code == 200, answer.text
                return
            await asyncio.sleep(1)
    raise AssertionError(f"{handle.id}: the approval was not answered in 60 tries")


def _check_stream(report: Report, task_id: str, seen: _Stream, whole: _Stream) -> None:
    ids = [e[0] for e in seen.events]
    duplicates = len(ids) - len(set(ids))
    report.duplicated += duplicates
    if ids != list(range(len(ids))):
        report.problems.append(f"{task_id}: stream ids {ids} are not 0..n-1 in order")
        report.lost += 0 if duplicates else 1
    if seen.events != whole.events:
        report.false_reports += 1
        report.problems.append(f"{task_id}: the resumed stream differs from the whole one")
    if seen.errors:
        report.false_reports += seen.errors
        report.problems.append(f"{task_id}: {seen.errors} error events on the stream")


API_RESTARTS: dict[str, Scenario] = {"API SIGKILL under SSE": api_restart_under_sse}


# ---- lost files on the host (item 4) ----------------------------------------------


def lose_file(what: str) -> Scenario:
    """Delete worker 1's worktree (`what="worktree"`) or its transcript while its first
    command runs. The loss must not turn into a quietly partial "completed" task: the
    worker fails naming the loss, the task stops at the gate marked partial, and
    retrying that worker rebuilds it from its branch, so the merge holds every mark once."""

    async def run(stack: Stack) -> Report:
        configure(stack)
        handle = await start_task(stack)
        await when(
            handle,
            lambda _: bool(list(stack.settings.worktrees_dir.glob("**/notes/log_1.txt"))),
            what="worker 1 inside its first command",
        )
        if what == "worktree":
            mark = next(stack.settings.worktrees_dir.glob("**/notes/log_1.txt"))
            shutil.rmtree(mark.parent.parent)
        else:
            (stack.settings.transcripts_dir / handle.id / "1" / "r1.json").unlink()
        status = await when(
            handle,
            lambda s: s.phase.is_final or s.phase is Phase.AWAITING_APPROVAL,
            timeout=240,
            what="the task to park or end",
        )
        report = Report(tasks=0)
        lost = status.subagents[0]
        if status.partial != [1] or what not in (lost.error or ""):
            report.false_reports += 1
            report.problems.append(
                f"{handle.id}: {what} lost, but the gate shows partial={status.partial}, "
                f"#1 {lost.state.value} ({lost.error})"
            )
            await handle.cancel()
            report.add(
                await check_task(
                    stack.client, stack.settings, stack.repo, handle.id, Expected(Phase.CANCELLED)
                )
            )
            return report
        await handle.execute_update(
            Updates.REQUEST_CHANGES,
            RequestChangesInput(by="ops", feedback="", only_failed=True),
            result_type=ApprovalRecord,
        )
        await when(handle, lambda s: s.round == 2, what="the retry round")
        report.add(await to_gate_and_approve(stack, handle))
        return report

    return run


LOST_FILES: dict[str, Scenario] = {
    "worktree deleted mid-task (item 4)": lose_file("worktree"),
    "transcript deleted mid-task (item 4)": lose_file("transcript"),
}


# ---- the target branch moves (item 6) ---------------------------------------------


async def target_moved(stack: Stack) -> Report:
    """`main` gains a commit while the reviewer reads: the gate must say "behind by 1",
    no conflict; a rebase round moves the change onto the new tip without running a
    worker again, and what is merged is built on that tip."""
    configure(stack, slow=ScriptedRole.REVIEWER)
    handle = await start_task(stack)
    await when(handle, lambda s: s.phase is Phase.REVIEWING, timeout=240, what="the review")
    (stack.repo / "moved.txt").write_text("main moved on\n", encoding="utf-8")
    git(stack.repo, "add", "-A")
    git(stack.repo, "commit", "-q", "-m", "main moves on")
    tip = git(stack.repo, "rev-parse", "main")
    stack.model.configure(role_latency_ms={})
    status = await when(
        handle, lambda s: s.phase is Phase.AWAITING_APPROVAL, timeout=240, what="the gate"
    )
    report = Report(tasks=0)
    target = status.target
    if target is None or (target.behind, target.conflicts, target.tip) != (1, [], tip):
        report.false_reports += 1
        report.problems.append(f"{handle.id}: main moved by one commit; the gate says {target}")
    await handle.execute_update(
        Updates.REQUEST_CHANGES,
        RequestChangesInput(by="ops", feedback="", rebase=True),
        result_type=ApprovalRecord,
    )
    await when(
        handle,
        lambda s: s.round == 2 and s.phase is Phase.AWAITING_APPROVAL,
        timeout=240,
        what="the rebased change at the gate",
    )
    report.add(await to_gate_and_approve(stack, handle))
    try:
        git(stack.repo, "merge-base", "--is-ancestor", tip, f"switchboard/{handle.id}")
    except subprocess.CalledProcessError:
        report.false_reports += 1
        report.problems.append(f"{handle.id}: rebased, but not merged onto main's new tip")
    return report


TARGET_MOVES: dict[str, Scenario] = {"target moved, rebase round (item 6)": target_moved}
