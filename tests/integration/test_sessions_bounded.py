"""Chat sessions are bounded: a quota of open sessions per user (429 past it), and
a session with nothing said for its idle time closes itself, history kept.
Real uvicorn, workflows, worker and the scripted model; short limits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from switchboard import wire
from switchboard.conversation import EntriesPage, EntriesRequest, SessionEntry
from switchboard.model_server import ModelServerHandle
from switchboard.settings import Settings
from tests.integration.test_conversation import chat_model
from tests.integration.test_conversation_api import ApiServer

pytestmark = pytest.mark.integration

__all__ = ["chat_model"]

IDLE_SECONDS = 3.0


async def _serve(settings: Settings, temporal_env: WorkflowEnvironment) -> ApiServer:
    target = temporal_env.client.service_client.config.target_host
    server = ApiServer(settings.model_copy(update={"temporal_address": target}))
    await server.start()
    return server


@pytest.fixture
async def bounded_api(
    settings: Settings,
    temporal_env: WorkflowEnvironment,
    worker: None,
    chat_model: ModelServerHandle,
) -> AsyncIterator[ApiServer]:
    bounded = settings.model_copy(
        update={"max_open_sessions_per_user": 2, "session_idle_hours": IDLE_SECONDS / 3600}
    )
    server = await _serve(bounded, temporal_env)
    try:
        yield server
    finally:
        await server.stop()


def _user() -> dict[str, str]:
    return {"X-Switchboard-User": f"u{uuid.uuid4().hex[:10]}"}


async def test_past_the_quota_a_new_session_is_a_429_until_one_closes(
    bounded_api: ApiServer,
) -> None:
    async with httpx.AsyncClient(base_url=bounded_api.url, headers=_user()) as http:
        first = await http.post("/v1/sessions", json={"title": "one"})
        second = await http.post("/v1/sessions", json={"title": "two"})
        assert first.status_code == second.status_code == 201
        third = await _until_refused(http)
        assert "2 open sessions, the most allowed" in third.json()["detail"]
        # Someone else is not affected.
        other = await http.post("/v1/sessions", headers=_user())
        assert other.status_code == 201
        closed = await http.delete(f"/v1/sessions/{first.json()['session_id']}")
        assert closed.status_code == 200
        async with asyncio.timeout(30):  # visibility sees the close a moment later
            while (again := await http.post("/v1/sessions")).status_code == 429:
                await asyncio.sleep(0.2)
        assert again.status_code == 201


async def _until_refused(http: httpx.AsyncClient) -> httpx.Response:
    """The next create, once visibility counts the two open sessions."""
    async with asyncio.timeout(30):
        while True:
            response = await http.post("/v1/sessions", json={"title": "extra"})
            if response.status_code == 429:
                return response
            assert response.status_code == 201, response.text
            # Created before visibility caught up: close it and try again.
            await http.delete(f"/v1/sessions/{response.json()['session_id']}")
            await asyncio.sleep(0.2)


async def test_an_idle_session_closes_itself_and_keeps_its_history(
    bounded_api: ApiServer,
) -> None:
    async with httpx.AsyncClient(base_url=bounded_api.url, headers=_user(), timeout=30) as http:
        session_id = (await http.post("/v1/sessions")).json()["session_id"]
        posted = await http.post(f"/v1/sessions/{session_id}/messages", json={"content": "hi"})
        assert posted.status_code == 202
        # Talking keeps it open: at 2/3 of the idle time, twice over, it is still open.
        for _ in range(2):
            await asyncio.sleep(IDLE_SECONDS * 2 / 3)
            state = (await http.get(f"/v1/sessions/{session_id}")).json()
            assert not state["closed"]
            again = await http.post(f"/v1/sessions/{session_id}/messages", json={"content": "..."})
            assert again.status_code == 202
        async with asyncio.timeout(IDLE_SECONDS * 10):
            while not (await http.get(f"/v1/sessions/{session_id}")).json()["closed"]:
                await asyncio.sleep(0.3)
        refused = await http.post(f"/v1/sessions/{session_id}/messages", json={"content": "x"})
        assert refused.status_code == 409
    entries = await _entries(bounded_api, session_id)
    said = [e.content for e in entries if e.role == "user"]
    assert said == ["hi", "...", "..."]
    assert "closed itself after" in entries[-1].content


async def _entries(api: ApiServer, session_id: str) -> list[SessionEntry]:
    # The closed session's history, from its workflow's query (no event stream needed).
    client = await Client.connect(
        api.settings.temporal_address, data_converter=pydantic_data_converter
    )
    page: EntriesPage = await client.get_workflow_handle(session_id).query(
        wire.Conversation.ENTRIES, EntriesRequest(from_offset=0), result_type=EntriesPage
    )
    return page.entries
