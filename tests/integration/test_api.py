"""The HTTP API end to end: uvicorn on a real socket, the real `DelegatedTaskWorkflow`
on the session's Temporal dev server, a real worker (bwrap sandboxes, git, the
scripted model over HTTP). Requests go over TCP with httpx; SSE is parsed off the wire.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.deps import USER_HEADER
from api.main import create_app
from entrypoints.worker import build_workers, run_workers
from switchboard.model_server import ModelServerHandle
from switchboard.models import EventKind, Phase, TaskEvent, TaskStatus
from switchboard.service import task_id_for
from switchboard.settings import Settings
from switchboard.temporal import ensure_search_attributes

pytestmark = pytest.mark.integration

ALICE = {USER_HEADER: "alice"}
BOB = {USER_HEADER: "bob"}


@pytest.fixture
async def http(
    settings: Settings, temporal_env: WorkflowEnvironment
) -> AsyncIterator[httpx.AsyncClient]:
    """The API served by uvicorn on 127.0.0.1, on the worker's task queue."""
    target = temporal_env.client.service_client.config.target_host
    app = create_app(settings.model_copy(update={"temporal_address": target}))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not serving.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        await serving
        sock.close()


@dataclass
class Sse:
    id: str | None
    event: str
    data: str

    @property
    def task_event(self) -> TaskEvent:
        return TaskEvent.model_validate_json(self.data)


async def read_sse(
    http: httpx.AsyncClient,
    path: str,
    headers: dict[str, str],
    *,
    until: EventKind | None = None,
) -> list[Sse]:
    """Events off the wire until the server ends the stream (or `until` arrives)."""
    received: list[Sse] = []
    async with asyncio.timeout(90), http.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line == "":
                if "data" in fields:
                    received.append(Sse(fields.get("id"), fields.get("event", ""), fields["data"]))
                    if until is not None and received[-1].event == until.value:
                        return received
                fields = {}
            elif not line.startswith(":"):  # ":" lines are keep-alive comments
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
    return received


async def submit(http: httpx.AsyncClient, repo: Path, **extra: Any) -> str:
    body = {"goal": "Add a helper", "repo": str(repo), "subtasks": [{"title": "Helper"}]}
    response = await http.post("/v1/tasks", json={**body, "review": False, **extra}, headers=ALICE)
    assert response.status_code == 201, response.text
    task_id: str = response.json()["task_id"]
    return task_id


async def wait_status(
    http: httpx.AsyncClient,
    task_id: str,
    phase: Phase,
    round_: int = 1,
    *,
    headers: dict[str, str] = ALICE,
) -> TaskStatus:
    last = None
    for _ in range(900):
        response = await http.get(f"/v1/tasks/{task_id}", headers=headers)
        assert response.status_code == 200, response.text
        last = TaskStatus.model_validate(response.json())
        if last.phase is phase and last.round == round_:
            return last
        assert not last.phase.is_final, f"ended {last.phase} ({last.error}) waiting for {phase}"
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {phase}; last: {last}")


async def test_submit_stream_diff_approve_and_resume(
    http: httpx.AsyncClient, client: Client, worker: None, repo: Path
) -> None:
    first = await http.post(
        "/v1/tasks",
        json={"goal": "Add a helper", "repo": str(repo), "review": False, "request_id": "req-1",
              "subtasks": [{"title": "Helper"}]},
        headers=ALICE,
    )  # fmt: skip
    assert first.status_code == 201
    task_id = first.json()["task_id"]
    assert first.json()["created"] is True and task_id.startswith("task-")
    again = await http.post(
        "/v1/tasks", json={"goal": "other words", "repo": str(repo), "request_id": "req-1"},
        headers=ALICE,
    )  # fmt: skip
    assert again.status_code == 200
    assert again.json() == {"task_id": task_id, "created": False, "notice": None}
    assert task_id_for("bob", "req-1") != task_id  # the key is per owner

    # Live: the stream delivers events as they happen, in offset order.
    live = await read_sse(
        http, f"/v1/tasks/{task_id}/events", ALICE, until=EventKind.APPROVAL_NEEDED
    )
    assert [int(e.id or -1) for e in live] == list(range(len(live)))
    assert all(e.event == e.task_event.kind.value for e in live)
    kinds = [e.task_event.kind for e in live]
    for expected in (EventKind.PHASE, EventKind.SUBAGENT_STARTED, EventKind.DIFF_READY):
        assert expected in kinds

    # Somebody else's task does not exist for them.
    for method, path in [
        ("GET", ""),
        ("GET", "/diff"),
        ("GET", "/events"),
        ("POST", "/approve"),
        ("POST", "/cancel"),
    ]:
        response = await http.request(method, f"/v1/tasks/{task_id}{path}", headers=BOB)
        assert response.status_code == 404, (path, response.text)
        assert task_id in response.json()["detail"]

    status = await wait_status(http, task_id, Phase.AWAITING_APPROVAL)
    assert status.owner == "alice" and status.subagents[0].steps >= 1
    listed = await _listed(http, ALICE, task_id)
    assert listed["phase"] == Phase.AWAITING_APPROVAL.value and listed["owner"] == "alice"
    bobs = (await http.get("/v1/tasks", headers=BOB)).json()
    assert task_id not in [t["task_id"] for t in bobs["data"]]

    whole = await http.get(f"/v1/tasks/{task_id}/diff", headers=ALICE)
    assert whole.status_code == 200, whole.text
    one = await http.get(f"/v1/tasks/{task_id}/diff", params={"subagent": 1}, headers=ALICE)
    assert one.status_code == 200, one.text
    assert status.diff_stat is not None
    assert whole.json()["stat"]["files"] == status.diff_stat.files
    assert one.json()["stat"]["files"] == status.diff_stat.files
    assert "+++ b/" + status.diff_stat.files[0] in whole.json()["patch"]

    approved = await http.post(
        f"/v1/tasks/{task_id}/approve", json={"comment": "ship it"}, headers=ALICE
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["decision"] == "approved" and approved.json()["by"] == "alice"

    # Resume after the last event seen: nothing lost, nothing repeated, the stream
    # ends by itself after the final event.
    last_seen = int(live[-1].id or 0)
    rest = await read_sse(
        http, f"/v1/tasks/{task_id}/events", {**ALICE, "Last-Event-ID": str(last_seen)}
    )
    assert int(rest[0].id or 0) == last_seen + 1
    assert rest[-1].task_event.kind is EventKind.COMPLETED
    assert EventKind.APPROVED in [e.task_event.kind for e in rest]
    replay = await read_sse(http, f"/v1/tasks/{task_id}/events?from=2", ALICE)
    assert [e.data for e in replay] == [e.data for e in (live + rest)[2:]]

    await client.get_workflow_handle(task_id).result()
    for path, body in [
        ("approve", {}),
        ("reject", {}),
        ("request-changes", {"feedback": "more"}),
        ("steer", {"guidance": "faster"}),
        ("cancel", None),
    ]:
        late = await http.post(f"/v1/tasks/{task_id}/{path}", json=body, headers=ALICE)
        assert late.status_code == 409, (path, late.text)
        assert "already ended (completed)" in late.json()["detail"]


async def test_request_changes_then_reject(
    http: httpx.AsyncClient, worker: None, repo: Path
) -> None:
    task_id = await submit(http, repo)
    await wait_status(http, task_id, Phase.AWAITING_APPROVAL)
    blank = await http.post(
        f"/v1/tasks/{task_id}/request-changes", json={"feedback": " "}, headers=ALICE
    )
    assert blank.status_code == 422
    changes = await http.post(
        f"/v1/tasks/{task_id}/request-changes", json={"feedback": "add docs"}, headers=ALICE
    )
    assert changes.status_code == 200, changes.text
    assert changes.json()["decision"] == "changes_requested"
    assert changes.json()["comment"] == "add docs"

    status = await wait_status(http, task_id, Phase.AWAITING_APPROVAL, round_=2)
    assert [a.decision for a in status.approvals] == ["changes_requested"]
    rejected = await http.post(f"/v1/tasks/{task_id}/reject", headers=ALICE)
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["decision"] == "rejected" and rejected.json()["round"] == 2
    events = await read_sse(http, f"/v1/tasks/{task_id}/events", ALICE)
    assert events[-1].task_event.phase is Phase.REJECTED


async def test_steer_and_cancel_a_running_task(
    http: httpx.AsyncClient, worker: None, repo: Path, model: ModelServerHandle
) -> None:
    model.configure(latency_ms=300)  # keep the subagent busy long enough to steer it
    task_id = await submit(http, repo)
    await read_sse(http, f"/v1/tasks/{task_id}/events", ALICE, until=EventKind.SUBAGENT_STARTED)

    too_early = await http.post(f"/v1/tasks/{task_id}/approve", headers=ALICE)
    assert too_early.status_code == 409
    assert "not awaiting approval" in too_early.json()["detail"]

    steered = await http.post(
        f"/v1/tasks/{task_id}/steer", json={"guidance": "prefer small functions"}, headers=ALICE
    )
    assert steered.status_code == 202
    assert steered.json() == {"task_id": task_id, "action": "steer"}
    cancelled = await http.post(f"/v1/tasks/{task_id}/cancel", headers=ALICE)
    assert cancelled.status_code == 202

    events = [e.task_event for e in await read_sse(http, f"/v1/tasks/{task_id}/events", ALICE)]
    steer_events = [e for e in events if e.kind is EventKind.STEERED]
    assert len(steer_events) == 1 and "prefer small functions" in steer_events[0].message
    assert steer_events[0].data["by"] == "alice"
    assert events[-1].kind is EventKind.CANCELLED
    final = await http.get(f"/v1/tasks/{task_id}", headers=ALICE)
    assert final.json()["phase"] == Phase.CANCELLED.value


async def test_unknown_tasks_are_404_everywhere(http: httpx.AsyncClient) -> None:
    for task_id in ("task-01J0000000000000000000000", "conversation-1"):
        for method, path, body in [
            ("GET", "", None),
            ("GET", "/diff", None),
            ("GET", "/events", None),
            ("POST", "/approve", {}),
            ("POST", "/request-changes", {"feedback": "x"}),
            ("POST", "/steer", {"guidance": "x"}),
            ("POST", "/cancel", None),
        ]:
            response = await http.request(
                method, f"/v1/tasks/{task_id}{path}", json=body, headers=ALICE
            )
            assert response.status_code == 404, (task_id, path, response.text)
            detail = response.json()["detail"]
            assert f"no task {task_id!r}" in detail and "task list" in detail
    health = await http.get("/readyz")
    assert health.json() == {"status": "ok", "temporal": "ok"}


async def _listed(http: httpx.AsyncClient, headers: dict[str, str], task_id: str) -> Any:
    """The task's row in GET /v1/tasks (visibility is eventually consistent: poll)."""
    for _ in range(100):
        page = (await http.get("/v1/tasks", headers=headers)).json()
        assert page["count"] == len(page["data"])
        rows = [row for row in page["data"] if row["task_id"] == task_id]
        if rows and rows[0]["phase"] == Phase.AWAITING_APPROVAL.value:
            return rows[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{task_id} not listed: {json.dumps(page)}")


async def test_an_ended_task_reports_status_without_a_worker(
    http: httpx.AsyncClient, client: Client, repo: Path
) -> None:
    task_id = await submit(http, repo)  # no worker: the task never runs
    await client.get_workflow_handle(task_id).terminate(reason="operator stopped it")
    response = await http.get(f"/v1/tasks/{task_id}", headers=ALICE)
    assert response.status_code == 200, response.text
    status = TaskStatus.model_validate(response.json())
    assert status.phase is Phase.FAILED and status.error == "operator stopped it"
    assert (status.goal, status.owner, status.repo) == ("Add a helper", "alice", str(repo))
    for _ in range(50):  # visibility is eventually consistent
        rows = (await http.get("/v1/tasks", headers=ALICE)).json()["data"]
        row = next(r for r in rows if r["task_id"] == task_id)
        if row["status"] == "terminated":
            break
        await asyncio.sleep(0.1)
    assert (row["status"], row["phase"]) == ("terminated", "failed")


async def test_a_finished_task_reports_its_result_without_a_worker(
    http: httpx.AsyncClient, client: Client, settings: Settings, repo: Path
) -> None:
    """Found by schemathesis: the status of an ended task read from its result (no
    worker to answer the query) was a 500, the result coming back as a plain dict."""
    stop = asyncio.Event()
    running = asyncio.create_task(run_workers(build_workers(client, settings), stop))
    try:
        task_id = await submit(http, repo)
        await wait_status(http, task_id, Phase.AWAITING_APPROVAL)
        rejected = await http.post(f"/v1/tasks/{task_id}/reject", json={}, headers=ALICE)
        assert rejected.status_code == 200, rejected.text
        await client.get_workflow_handle(task_id).result()
    finally:
        stop.set()
        await running
    response = await http.get(f"/v1/tasks/{task_id}", headers=ALICE)
    assert response.status_code == 200, response.text
    status = TaskStatus.model_validate(response.json())
    assert status.phase is Phase.REJECTED
    assert [s.title for s in status.subagents] == ["Helper"]


async def test_search_attributes_registration_is_idempotent(client: Client) -> None:
    # The session's dev server was started with them, so nothing is added, and
    # asking twice changes nothing.
    assert await ensure_search_attributes(client, client.namespace) == []
    assert await ensure_search_attributes(client, client.namespace) == []
