"""The chat surfaces over real HTTP: the session API with SSE, the OpenAI-compatible
endpoint through the official `openai` client, the page's files, and bad input.
uvicorn on a real socket, the real workflows and worker, the scripted model."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
from openai.types.chat import ChatCompletionMessageParam
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from chat_gateway import StreamItem
from entrypoints._demo_script import drive_scripted_conversation
from entrypoints.api_client import ApiError, SessionClient
from switchboard.conversation import SessionEntry, session_id_for
from switchboard.model_server import ModelServerHandle
from switchboard.models import EventKind, Phase, TaskRequest
from switchboard.settings import Settings
from testkit import git
from tests.integration.test_conversation import chat_model

pytestmark = pytest.mark.integration

__all__ = ["chat_model"]  # the fixture, shared with test_conversation

WAIT = 90.0


class ApiServer:
    """The API under uvicorn on one port; stop and start it again like a restart."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._serving: asyncio.Task[None] | None = None

    async def start(self) -> None:
        app = create_app(self.settings)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._serving = asyncio.create_task(self._server.serve())
        while not self._server.started:
            assert not self._serving.done(), "uvicorn did not start"
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            await self._serving
            self._server = None


@pytest.fixture
async def api(
    settings: Settings,
    temporal_env: WorkflowEnvironment,
    worker: None,
    chat_model: ModelServerHandle,
) -> AsyncIterator[ApiServer]:
    target = temporal_env.client.service_client.config.target_host
    server = ApiServer(settings.model_copy(update={"temporal_address": target}))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class Follower:
    """A client following a session's stream in the background, across drops."""

    def __init__(self, client: SessionClient, session_id: str, start: int = 0) -> None:
        self.items: list[StreamItem] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run(client.events(session_id, start)))

    async def _run(self, stream: AsyncIterator[StreamItem]) -> None:
        async for item in stream:
            self.items.append(item)
            self._changed.set()

    @property
    def entries(self) -> list[SessionEntry]:
        return [SessionEntry.model_validate(i.data) for i in self.items if i.event == "entry"]

    async def wait(self, what: str, test: object) -> None:
        assert callable(test)
        async with asyncio.timeout(WAIT):
            while not test(self.entries):
                assert not self._task.done(), f"the stream ended before {what}"
                self._changed.clear()
                await self._changed.wait()

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def ended(turn: int) -> object:
    return lambda entries: any(e.turn == turn and e.ends_turn for e in entries)


def got(kind: EventKind) -> object:
    return lambda entries: any(e.event is kind for e in entries)


async def test_the_session_api_streams_tokens_tasks_and_survives_a_server_restart(
    api: ApiServer, repo: Path, chat_model: ModelServerHandle
) -> None:
    chat_model.configure(role_latency_ms={"worker": 150, "explorer": 150, "reviewer": 150})
    async with SessionClient(api.url, "alice") as alice:
        info = await alice.create_session(repo=str(repo), title="http")
        follower = Follower(alice, info.session_id)
        try:
            accepted = await alice.post(info.session_id, "delegate: add a slugify helper")
            assert accepted["turn"] == 1 and accepted["offset"] == 0
            await follower.wait("the delegation", ended(1))
            assert any(i.event == "token" for i in follower.items)
            await follower.wait("the plan", got(EventKind.PLAN))

            await api.stop()  # the gateway goes away mid-task; the client keeps retrying
            await asyncio.sleep(0.5)
            await api.start()

            await follower.wait("the approval request", got(EventKind.APPROVAL_NEEDED))
            assert any(i.event == "task" for i in follower.items)
            task_id = (await alice.state(info.session_id)).tasks[0].task_id
            diff = await alice.diff(task_id)
            assert diff.stat.files_changed == 2
            await alice.decide(task_id, "approve", "from the page")  # the page's button
            await follower.wait("the merge", got(EventKind.COMPLETED))

            offsets = [e.offset for e in follower.entries]
            assert offsets == list(range(len(offsets))), "an entry was lost or repeated"
            approved = next(e for e in follower.entries if e.event is EventKind.APPROVED)
            assert approved.data["by"] == "alice"
        finally:
            await follower.close()
    assert git(repo, "rev-parse", "--verify", f"switchboard/{task_id}")


async def test_the_openai_client_chats_delegates_and_hears_task_updates(
    api: ApiServer, repo: Path, settings: Settings
) -> None:
    client = openai.AsyncOpenAI(
        base_url=f"{api.url}/v1",
        api_key="unused",
        default_headers={"X-Switchboard-User": "ann", "X-Switchboard-Repo": str(repo)},
        max_retries=0,
    )
    try:
        first = await client.chat.completions.create(
            model="switchboard",
            messages=[{"role": "user", "content": "delegate: add a slugify helper"}],
            user="ann-chat",
        )
        text = first.choices[0].message.content or ""
        assert text.startswith("Let me hand this to a team of subagents.")
        assert "started task-" in text
        task_id = "task-" + text.split("started task-")[1].split()[0]

        history: list[ChatCompletionMessageParam] = [
            {"role": "user", "content": "delegate: add a slugify helper"},
            {"role": "assistant", "content": text},
            {"role": "user", "content": "hello there"},
        ]
        pieces: list[str] = []
        stream = await client.chat.completions.create(
            model="switchboard",
            messages=history,
            user="ann-chat",
            stream=True,
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
        assert len(pieces) > 3, "the answer was not streamed"
        assert "".join(pieces).endswith("Scripted model here. You said: hello there")

        session_id = session_id_for("ann", "openai:ann-chat")
        async with SessionClient(api.url, "ann") as ann:
            for _ in range(900):  # until the session has heard of the approval request
                if (await ann.state(session_id)).tasks[0].phase is Phase.AWAITING_APPROVAL:
                    break
                await asyncio.sleep(0.1)
        reply = await client.chat.completions.create(
            model="switchboard",
            messages=[{"role": "user", "content": "approve"}],
            user="ann-chat",
        )
        text = reply.choices[0].message.content or ""
        # The updates since the last answer come first, then the answer.
        assert text.startswith("Task updates:")
        assert "approval_needed" in text and f"{task_id}: approved by ann" in text
    finally:
        await client.close()


async def test_bad_input_gets_a_clear_4xx_and_changes_nothing(
    api: ApiServer, repo: Path, settings: Settings
) -> None:
    async with (
        SessionClient(api.url, "alice") as alice,
        SessionClient(api.url, "mallory") as mallory,
        httpx.AsyncClient(base_url=api.url, headers={"X-Switchboard-User": "alice"}) as raw,
    ):
        info = await alice.create_session(repo=str(repo))
        sid = info.session_id
        unknown = "session-01JZZZZZZZZZZZZZZZZZZZZZZZ"
        for method, path in (
            ("GET", f"/v1/sessions/{unknown}"),
            ("POST", f"/v1/sessions/{unknown}/messages"),
            ("GET", f"/v1/sessions/{unknown}/events"),
            ("GET", "/v1/sessions/not-a-session/events"),
        ):
            response = await raw.request(method, path, json={"content": "hi"})
            assert response.status_code == 404, (path, response.text)
            assert "no session" in response.json()["detail"]

        malformed = await raw.post(
            f"/v1/sessions/{sid}/messages",
            content=b'{"content": "hi"',
            headers={"Content-Type": "application/json"},
        )
        assert malformed.status_code == 422 and "not valid JSON" in malformed.json()["detail"]
        huge = await raw.post(f"/v1/sessions/{sid}/messages", json={"content": "x" * 1_000_000})
        assert huge.status_code == 422 and "32000" in huge.json()["detail"]
        blank = await raw.post(f"/v1/sessions/{sid}/messages", json={"content": ""})
        assert blank.status_code == 422
        bad_resume = await raw.get(f"/v1/sessions/{sid}/events", headers={"Last-Event-ID": "x"})
        assert bad_resume.status_code == 400

        # Someone else's session looks absent, and posting to it records nothing.
        with pytest.raises(ApiError) as refused:
            await mallory.post(sid, "let me in")
        assert refused.value.status == 404
        state = await alice.state(sid)
        assert state.next_offset == 0

        # Someone else's task: approving it is refused as if it did not exist.
        submitted = await alice_task(api, repo)
        with pytest.raises(ApiError) as foreign:
            await mallory.decide(submitted, "approve")
        assert foreign.value.status == 404

        openai_client = openai.AsyncOpenAI(
            base_url=f"{api.url}/v1", api_key="unused", max_retries=0
        )
        try:
            with pytest.raises(openai.BadRequestError):
                await openai_client.chat.completions.create(
                    model="switchboard", messages=[{"role": "user", "content": "y" * 1_000_000}]
                )
            with pytest.raises(openai.BadRequestError):
                await openai_client.chat.completions.create(
                    model="switchboard", messages=[{"role": "system", "content": "no question"}]
                )
            with pytest.raises(openai.NotFoundError):
                await openai_client.chat.completions.create(
                    model="switchboard",
                    messages=[{"role": "user", "content": "hi"}],
                    extra_headers={"X-Switchboard-Session": sid},  # alice's, not "local"'s
                )
        finally:
            await openai_client.close()


async def alice_task(api: ApiServer, repo: Path) -> str:
    async with httpx.AsyncClient(base_url=api.url, headers={"X-Switchboard-User": "alice"}) as raw:
        response = await raw.post(
            "/v1/tasks",
            json=TaskRequest(goal="alice's", repo=str(repo), review=False).model_dump(
                mode="json", exclude={"owner", "budget", "credential_ref", "policy"}
            ),
        )
        assert response.status_code == 201, response.text
        task_id: str = response.json()["task_id"]
        return task_id


async def test_the_page_is_served_with_its_files(api: ApiServer) -> None:
    async with httpx.AsyncClient(base_url=api.url) as raw:
        page = await raw.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script src="/static/chat.js">' in page.text
        script = await raw.get("/static/chat.js")
        assert script.status_code == 200 and "text/javascript" in script.headers["content-type"]
        assert (await raw.get("/static/chat.css")).status_code == 200
        assert (await raw.get("/static/..%2Fclient.py")).status_code == 404


async def test_the_scripted_demo_conversation_delegates_approves_and_merges(
    api: ApiServer, repo: Path
) -> None:
    said: list[str] = []
    result = await drive_scripted_conversation(api.url, str(repo), say=said.append)
    assert result.merged and result.task_id is not None
    assert said == result.transcript
    assert any("approval needed" in line for line in said)
    assert any("merged into" in line for line in said)
