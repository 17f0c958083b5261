"""One follower per task per process: many SSE clients of one task cost one poller.

uvicorn on a real socket, the real task workflow and worker (bwrap, git, the
scripted model), SSE parsed off the wire; the follower's own counters say how
many pollers ran and how many events queries they sent.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from entrypoints.worker import build_workers, run_workers
from switchboard import follow
from switchboard.follow import TaskFollowers
from switchboard.models import EventKind, FollowNotice, FollowNoticeKind, Phase, TaskEvent
from switchboard.settings import Settings
from tests.integration.test_api import ALICE, Sse, read_sse, submit, wait_status

pytestmark = pytest.mark.integration

CLIENTS = 5


@pytest.fixture
async def api(
    settings: Settings, temporal_env: WorkflowEnvironment
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The API on 127.0.0.1 and its app (whose state holds the task service)."""
    target = temporal_env.client.service_client.config.target_host
    app = create_app(settings.model_copy(update={"temporal_address": target}))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not serving.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            yield http, app
    finally:
        server.should_exit = True
        await serving
        sock.close()


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(600):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _ids(stream: list[Sse]) -> list[int]:
    return [int(e.id or -1) for e in stream]


async def test_many_streams_of_one_task_share_one_poller(
    api: tuple[httpx.AsyncClient, FastAPI],
    client: Client,
    worker: None,
    repo: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A window of 4 events, so the slow subscriber below falls out of it and must
    # read what it missed itself (the real window is 2,000).
    monkeypatch.setattr(follow, "KEPT_EVENTS", 4)
    http, app = api
    followers: TaskFollowers = app.state.task_service.followers
    task_id = await submit(http, repo)
    path = f"/v1/tasks/{task_id}/events"

    # The poller stops when its last subscriber leaves, even while the task runs.
    alone = followers.subscribe(task_id)
    assert followers.active == 1
    alone.close()
    assert followers.active == 0
    started = followers.stats.pollers_started
    queries = followers.stats.event_queries

    # A slow subscriber in this process takes one batch, then stops reading.
    slow = followers.subscribe(task_id)
    slow_batches = slow.batches()
    first = await anext(slow_batches)

    streams = [asyncio.create_task(read_sse(http, path, ALICE)) for _ in range(CLIENTS - 1)]
    # One client drops out after a few events and comes back with Last-Event-ID.
    early = await read_sse(http, path, ALICE, until=EventKind.SUBAGENT_STARTED)
    rest = asyncio.create_task(
        read_sse(http, path, {**ALICE, "Last-Event-ID": str(_ids(early)[-1])})
    )
    await wait_status(http, task_id, Phase.AWAITING_APPROVAL)
    approved = await http.post(f"/v1/tasks/{task_id}/approve", headers=ALICE)
    assert approved.status_code == 200, approved.text
    full = await asyncio.gather(*streams)

    # Every client got every event once, in offset order, ending with the last one.
    for stream in full:
        assert _ids(stream) == list(range(len(stream)))
        assert [e.data for e in stream] == [e.data for e in full[0]]
        assert stream[-1].task_event.kind is EventKind.COMPLETED
    resumed = await rest
    assert [e.data for e in early + resumed] == [e.data for e in full[0]]

    # The slow subscriber held nobody up, and still gets everything, in order: what
    # fell out of the poller's window it read itself.
    got: list[TaskEvent] = list(first.events)
    async for batch in slow_batches:
        got.extend(batch.events)
    slow.close()
    assert [e.model_dump_json() for e in got] == [e.data for e in full[0]]

    # One poller served them all: its queries follow the task's workflow tasks,
    # not the number of clients.
    history = await client.get_workflow_handle(task_id).fetch_history()
    workflow_tasks = sum(
        1
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    )
    assert followers.stats.pollers_started == started + 1
    assert followers.stats.event_queries - queries <= workflow_tasks + 3
    assert followers.stats.catch_up_queries >= 1
    await _until(lambda: followers.active == 0, "the poller to stop after the task ended")


async def _collect(http: httpx.AsyncClient, path: str, into: asyncio.Queue[Sse | None]) -> None:
    """Every SSE event of one stream into `into`, then None when the server ends it."""
    async with http.stream("GET", path, headers=ALICE) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line == "":
                if "data" in fields:
                    await into.put(Sse(fields.get("id"), fields.get("event", ""), fields["data"]))
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
    await into.put(None)


async def _next(queue: asyncio.Queue[Sse | None], seconds: float = 60) -> Sse:
    async with asyncio.timeout(seconds):
        item = await queue.get()
    assert item is not None, "the stream ended"
    return item


def _notice(sse: Sse, kind: FollowNoticeKind) -> FollowNotice:
    assert (sse.event, sse.id) == (kind.value, None), sse  # no id: not a task event
    notice = FollowNotice.model_validate_json(sse.data)
    assert notice.kind is kind
    return notice


async def test_a_stream_stays_open_while_no_worker_answers_and_says_so_once(
    api: tuple[httpx.AsyncClient, FastAPI], client: Client, settings: Settings, repo: Path
) -> None:
    http, app = api
    followers: TaskFollowers = app.state.task_service.followers
    task_id = await submit(http, repo)  # no worker: nobody answers its queries
    patient = followers.subscribe(task_id, patient=True)
    received: asyncio.Queue[Sse | None] = asyncio.Queue()
    reader = asyncio.create_task(_collect(http, f"/v1/tasks/{task_id}/events", received))
    stop = asyncio.Event()
    workers: asyncio.Task[None] | None = None
    try:
        unavailable = _notice(await _next(received), FollowNoticeKind.WORKER_UNAVAILABLE)
        assert "no worker answered" in unavailable.message
        # Told once: the poller keeps asking (every PROBE_SECONDS and more), the
        # stream stays open and says nothing more until something changes.
        await asyncio.sleep(follow.PROBE_SECONDS + 12)
        assert received.empty() and not reader.done()
        assert followers.active == 1

        workers = asyncio.create_task(run_workers(build_workers(client, settings), stop))
        _notice(await _next(received), FollowNoticeKind.WORKER_BACK)
        events = [await _next(received)]
        while events[-1].event != EventKind.APPROVAL_NEEDED.value:
            events.append(await _next(received))
        approved = await http.post(f"/v1/tasks/{task_id}/approve", headers=ALICE)
        assert approved.status_code == 200, approved.text
        while (item := await received.get()) is not None:
            events.append(item)
        # After the notices, the task's events once each, in order, to the last one.
        assert _ids(events) == list(range(len(events)))
        assert events[-1].task_event.kind is EventKind.COMPLETED
    finally:
        reader.cancel()
        patient.close()
        stop.set()
        if workers is not None:
            await workers
    assert followers.active == 0


async def test_a_stall_seen_before_a_client_came_is_asked_about_again(
    api: tuple[httpx.AsyncClient, FastAPI], client: Client, settings: Settings, repo: Path
) -> None:
    http, app = api
    followers: TaskFollowers = app.state.task_service.followers
    stop = asyncio.Event()
    workers = asyncio.create_task(run_workers(build_workers(client, settings), stop))
    task_id = await submit(http, repo)
    await wait_status(http, task_id, Phase.AWAITING_APPROVAL)
    stop.set()
    await workers  # the task is parked and nobody answers its queries now

    patient = followers.subscribe(task_id, patient=True)
    try:
        async with followers.follow(task_id) as impatient:
            batches = impatient.batches()
            batch = await anext(batches)
            while batch.notice is None:  # events kept from before the worker stopped
                batch = await anext(batches)
            assert batch.notice.kind is FollowNoticeKind.WORKER_UNAVAILABLE
            assert "no worker answered" in batch.notice.message
            # Workers are back, but the parked task's history does not move: a new
            # client does not believe the old stall, asks again, and streams at once.
            stop = asyncio.Event()
            workers = asyncio.create_task(run_workers(build_workers(client, settings), stop))
            stream = await read_sse(
                http, f"/v1/tasks/{task_id}/events", ALICE, until=EventKind.APPROVAL_NEEDED
            )
            assert _ids(stream) == list(range(len(stream)))  # no notice: no stall seen
            # Its answer ends the stall for the subscriber that was told of it.
            async with asyncio.timeout(30):
                back = await anext(batches)
            assert back.notice is not None and back.notice.kind is FollowNoticeKind.WORKER_BACK
        assert followers.stats.pollers_started >= 1 and followers.active == 1
    finally:
        patient.close()
        await client.get_workflow_handle(task_id).terminate(reason="test over")
        stop.set()
        await workers


async def test_a_parked_task_s_poller_notices_the_worker_return_by_itself(
    api: tuple[httpx.AsyncClient, FastAPI], client: Client, settings: Settings, repo: Path
) -> None:
    http, app = api
    stop = asyncio.Event()
    workers = asyncio.create_task(run_workers(build_workers(client, settings), stop))
    task_id = await submit(http, repo)
    await wait_status(http, task_id, Phase.AWAITING_APPROVAL)
    stop.set()
    await workers

    followers: TaskFollowers = app.state.task_service.followers
    received: asyncio.Queue[Sse | None] = asyncio.Queue()
    reader = asyncio.create_task(_collect(http, f"/v1/tasks/{task_id}/events", received))
    try:
        _notice(await _next(received), FollowNoticeKind.WORKER_UNAVAILABLE)
        # Nothing asks but the poller: the history of the parked task stays still.
        stop = asyncio.Event()
        workers = asyncio.create_task(run_workers(build_workers(client, settings), stop))
        _notice(await _next(received), FollowNoticeKind.WORKER_BACK)
        stream = [await _next(received)]
        while stream[-1].event != EventKind.APPROVAL_NEEDED.value:
            stream.append(await _next(received))
        assert _ids(stream) == list(range(len(stream)))
        assert followers.stats.catch_up_queries == 0  # no subscriber asked: the poller did
    finally:
        reader.cancel()
        await client.get_workflow_handle(task_id).terminate(reason="test over")
        stop.set()
        await workers
