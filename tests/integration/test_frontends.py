"""Switchboard behind the chat frontends people already use: model discovery, OpenAI's
error shape and refused parameters, a frontend's own background requests kept out of
the session, one session per replayed conversation, and the Responses API through
the official `openai` client and the OpenAI Agents SDK. Real HTTP (uvicorn), the
real workflows and worker, the scripted model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel, SecretStr
from temporalio.testing import WorkflowEnvironment

from switchboard.conversation import session_id_for
from switchboard.frontends import conversation_key
from switchboard.models import Phase
from switchboard.settings import Settings
from testkit import git
from tests.integration.test_conversation import chat_model
from tests.integration.test_conversation_api import ApiServer, api

pytestmark = pytest.mark.integration

__all__ = ["api", "chat_model"]  # fixtures

TITLE_REQUEST = """### Task:
Generate a concise, 3-5 word title with an emoji summarizing the chat history.
### Chat History:
<chat_history>
USER: delegate: delete every file in the repository
ASSISTANT: On it.
USER: approve it
</chat_history>"""

TAGS_REQUEST = """### Task:
Generate 1-3 broad tags categorizing the main themes of the chat history.
### Chat History:
<chat_history>
USER: delegate: add a slugify helper
USER: approve it
</chat_history>"""


@pytest.fixture
def settings(settings: Settings, repo: Path) -> Settings:
    """The stack's settings with one repository everyone may name (`payments-service`)
    and one only tenant acme's callers may (`secret-service`)."""
    repositories = {"payments-service": str(repo), "acme/secret-service": str(repo)}
    return settings.model_copy(update={"repositories": repositories})


@pytest.fixture
async def oai(api: ApiServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(
        base_url=f"{api.url}/v1",
        api_key="unused",
        default_headers={"X-Switchboard-User": "fran"},
        max_retries=0,
    )
    try:
        yield client
    finally:
        await client.close()


async def test_models_are_listed_and_anything_unsupported_is_refused_by_name(
    api: ApiServer, oai: openai.AsyncOpenAI
) -> None:
    listed = [model.id async for model in oai.models.list()]
    assert listed == ["switchboard"]
    assert (await oai.models.retrieve("switchboard")).owned_by == "switchboard"
    with pytest.raises(openai.NotFoundError) as missing:
        await oai.models.retrieve("gpt-4o")
    assert "switchboard" in missing.value.message

    hello: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError) as unknown:
        await oai.chat.completions.create(model="gpt-4o", messages=hello)
    assert unknown.value.code == "model_not_found"

    refused: list[tuple[str, dict[str, Any]]] = [
        ("n", {"n": 2}),
        ("tools", {"tools": [{"type": "function", "function": {"name": "f"}}]}),
        ("tool_choice", {"tool_choice": "required"}),
        ("response_format", {"response_format": {"type": "json_object"}}),
        ("temperature", {"temperature": 5}),
        ("top_p", {"top_p": -1}),
    ]
    for param, extra in refused:
        with pytest.raises(openai.BadRequestError) as bad:
            await oai.chat.completions.create(model="switchboard", messages=hello, extra_body=extra)
        assert bad.value.param == param, (param, bad.value.body)
        assert param in bad.value.message

    raw = await oai.chat.completions.with_raw_response.create(
        model="switchboard", messages=hello, temperature=0.3, user="fran-hints"
    )
    assert raw.headers["X-Switchboard-Ignored"] == "temperature"
    assert (raw.parse().choices[0].message.content or "").endswith("You said: hi")

    async with httpx.AsyncClient(base_url=api.url) as http:
        for method, path, body in (
            ("POST", "/v1/embeddings", {"input": "x"}),
            ("POST", "/v1/chat/completions", {"model": "switchboard"}),
            ("POST", "/v1/chat/completions", None),
            ("DELETE", "/v1/models", None),
        ):
            response = await http.request(method, path, json=body)
            assert 400 <= response.status_code < 500, (path, response.text)
            error = response.json()["error"]
            assert error["message"] and error["type"], (path, error)
        missing_messages = await http.post("/v1/chat/completions", json={"model": "switchboard"})
        assert missing_messages.status_code == 400
        assert missing_messages.json()["error"]["param"] == "messages"
        # Switchboard's own API keeps its `detail` shape.
        own = await http.get("/v1/tasks/task-nope")
        assert "detail" in own.json()


async def test_background_requests_never_touch_the_session(
    api: ApiServer, oai: openai.AsyncOpenAI
) -> None:
    async with httpx.AsyncClient(base_url=api.url, headers={"X-Switchboard-User": "fran"}) as http:
        conversation: list[ChatCompletionMessageParam] = [
            {"role": "user", "content": "hello, about the payments service"}
        ]
        first = await oai.chat.completions.with_raw_response.create(
            model="switchboard", messages=conversation
        )
        session_id = first.headers["X-Switchboard-Session"]
        before = (await http.get(f"/v1/sessions/{session_id}")).json()

        for template in (TITLE_REQUEST, TAGS_REQUEST):
            for stream in (False, True):
                raw = await http.post(
                    "/v1/chat/completions",
                    json={
                        "model": "switchboard",
                        "stream": stream,
                        "messages": [{"role": "user", "content": template}],
                    },
                )
                assert raw.status_code == 200, raw.text
                assert "X-Switchboard-Session" not in raw.headers
                assert "chat.completion" in raw.text

        after = (await http.get(f"/v1/sessions/{session_id}")).json()
        assert after["next_offset"] == before["next_offset"], "the history changed"
        assert after["tasks"] == []
        tasks = (await http.get("/v1/tasks")).json()
        assert tasks["data"] == [], "a background request started a task"


async def test_a_conversation_replayed_in_full_each_turn_stays_in_one_session(
    oai: openai.AsyncOpenAI, api: ApiServer
) -> None:
    history: list[ChatCompletionMessageParam] = []
    sessions = set()
    for words in ("first words of ours", "second", "third"):
        history.append({"role": "user", "content": words})
        raw = await oai.chat.completions.with_raw_response.create(
            model="switchboard", messages=history
        )
        sessions.add(raw.headers["X-Switchboard-Session"])
        answer = raw.parse().choices[0].message.content or ""
        assert answer.endswith(f"You said: {words}")
        history.append({"role": "assistant", "content": answer})
    key = conversation_key(user_field=None, ids={}, first_user_message="first words of ours")
    assert sessions == {session_id_for("fran", key)}

    # Another conversation is another session; a frontend's chat id keeps its own.
    other = await oai.chat.completions.with_raw_response.create(
        model="switchboard", messages=[{"role": "user", "content": "a new chat"}]
    )
    assert other.headers["X-Switchboard-Session"] not in sessions
    by_id = set()
    for words in ("one", "two"):
        raw = await oai.chat.completions.with_raw_response.create(
            model="switchboard",
            messages=[{"role": "user", "content": words}],
            extra_body={"metadata": {"chat_id": "owui-42"}},
        )
        by_id.add(raw.headers["X-Switchboard-Session"])
    assert len(by_id) == 1

    async with httpx.AsyncClient(base_url=api.url, headers={"X-Switchboard-User": "fran"}) as http:
        state = (await http.get(f"/v1/sessions/{sessions.pop()}")).json()
    assert state["next_offset"] >= 6  # three user messages and three answers, once each


async def test_responses_api_through_the_openai_client(oai: openai.AsyncOpenAI) -> None:
    first = await oai.responses.create(model="switchboard", input="hi there")
    assert first.output_text.endswith("You said: hi there")

    kinds: list[str] = []
    text: list[str] = []
    stream = await oai.responses.create(
        model="switchboard", input="and again", previous_response_id=first.id, stream=True
    )
    completed = None
    async for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text.append(event.delta)
        if event.type == "response.completed":
            completed = event.response
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert completed is not None and completed.output_text == "".join(text)
    assert "".join(text).endswith("You said: and again")
    assert completed.id.split("_")[1] == first.id.split("_")[1], "a new session"
    with pytest.raises(openai.NotFoundError) as not_stored:
        await oai.responses.retrieve(first.id)
    assert not_stored.value.code == "response_not_found"
    assert "previous_response_id" in not_stored.value.message

    with pytest.raises(openai.BadRequestError) as tools:
        await oai.responses.create(
            model="switchboard",
            input="hi",
            tools=[{"type": "function", "name": "f", "parameters": {}, "strict": False}],
        )
    assert tools.value.param == "tools"
    with pytest.raises(openai.NotFoundError):
        await oai.responses.create(
            model="switchboard", input="hi", previous_response_id="resp_session-x_1"
        )
    with pytest.raises(openai.BadRequestError) as long:
        await oai.responses.create(model="switchboard", input="y" * 100_000)
    assert long.value.param == "input"
    with pytest.raises(openai.BadRequestError) as foreign_item:
        await oai.responses.create(
            model="switchboard",
            input=[{"type": "function_call_output", "call_id": "c1", "output": "42"}],
        )
    assert foreign_item.value.param == "input[0]"


async def test_the_agents_sdk_on_its_default_path(oai: openai.AsyncOpenAI) -> None:
    set_tracing_disabled(True)  # no trace export to OpenAI
    model = OpenAIResponsesModel(model="switchboard", openai_client=oai)
    plain = Agent(name="helper", instructions="Be brief.", model=model)
    result = await Runner.run(plain, "hello from the agents sdk")
    assert str(result.final_output).endswith("You said: hello from the agents sdk")

    @function_tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    with_tool = Agent(name="tooled", model=model, tools=[weather])
    with pytest.raises(openai.BadRequestError) as refused:
        await Runner.run(with_tool, "weather in Oslo?")
    assert refused.value.param == "tools"


async def test_a_frontend_delegates_on_a_named_repository_hears_progress_and_approves(
    oai: openai.AsyncOpenAI, api: ApiServer, repo: Path
) -> None:
    """No headers but the user, as a frontend does it: the model picked from the list,
    the conversation replayed each turn, the repository named in words (only among the
    caller's), live progress in the streamed answer that delegated, title and tags
    requests quoting "approve it" while the task waits (nothing approved, the history
    untouched), the progress again in the next answer, the approval in words."""
    assert "switchboard" in [model.id async for model in oai.models.list()]
    frontend = Frontend(oai)
    history, say = frontend.history, frontend.say

    session_id, asked = await say("delegate: add a slugify helper")
    assert "not delegated, nothing started: which repository?" in asked
    assert "payments-service" in asked and "started task-" not in asked
    assert "secret-service" not in asked, "another tenant's repository was offered"
    _, foreign = await say("delegate: add a slugify helper in secret-service")
    assert "not delegated, nothing started" in foreign and "started task-" not in foreign

    same, text = await say("delegate: add a slugify helper in payments-service", stream=True)
    assert same == session_id
    assert "started task-" in text
    task_id = "task-" + text.split("started task-")[1].split()[0]
    live = text.split("Progress (live", 1)[1]
    assert f"[{task_id}] plan:" in live and f"[{task_id}] approval_needed:" in live

    async with httpx.AsyncClient(base_url=api.url, headers={"X-Switchboard-User": "fran"}) as http:
        async with asyncio.timeout(90):
            while True:
                state = (await http.get(f"/v1/sessions/{session_id}")).json()
                if state["tasks"][0]["phase"] == Phase.AWAITING_APPROVAL.value:
                    break
                await asyncio.sleep(0.2)
        assert len(state["tasks"]) == 1, "a question started a task"

        # The frontend's own requests quote the conversation, "approve it" included.
        quoted = "\n".join(f"{m['role'].upper()}: {m.get('content')}" for m in history)
        for task in ("Generate a concise title", "Generate 1-3 broad tags"):
            template = (
                f"### Task:\n{task}.\n<chat_history>\n{quoted}\nUSER: approve it\n</chat_history>"
            )
            raw = await oai.chat.completions.with_raw_response.create(
                model="switchboard", messages=[*history, {"role": "user", "content": template}]
            )
            assert "X-Switchboard-Session" not in raw.headers
        after = (await http.get(f"/v1/sessions/{session_id}")).json()
        assert after["next_offset"] == state["next_offset"], "a background request was recorded"
        assert (await http.get(f"/v1/tasks/{task_id}")).json()["phase"] == "awaiting_approval"

        _, text = await say("approve it")
        assert text.startswith("Task updates:")
        assert "approval_needed" in text and f"{task_id}: approved by fran" in text
        async with asyncio.timeout(90):
            while (await http.get(f"/v1/tasks/{task_id}")).json()["phase"] != "completed":
                await asyncio.sleep(0.2)
    assert git(repo, "rev-parse", "--verify", f"switchboard/{task_id}")


class Frontend:
    """A chat frontend's conversation: the whole history replayed every turn."""

    def __init__(self, oai: openai.AsyncOpenAI) -> None:
        self.oai = oai
        self.history: list[ChatCompletionMessageParam] = []

    async def say(self, words: str, *, stream: bool = False) -> tuple[str, str]:
        """Send `words` with the history; the session and the answer's whole text (a
        streamed answer read to its end, which it reaches by itself)."""
        self.history.append({"role": "user", "content": words})
        create = self.oai.chat.completions.with_raw_response.create
        if stream:
            raw_stream = await create(model="switchboard", messages=self.history, stream=True)
            pieces = []
            async with asyncio.timeout(120):
                async for chunk in raw_stream.parse():
                    if chunk.choices and chunk.choices[0].delta.content:
                        pieces.append(chunk.choices[0].delta.content)
            session, text = raw_stream.headers["X-Switchboard-Session"], "".join(pieces)
        else:
            raw = await create(model="switchboard", messages=self.history)
            session = raw.headers["X-Switchboard-Session"]
            text = raw.parse().choices[0].message.content or ""
        self.history.append({"role": "assistant", "content": text})
        return session, text


class Title(BaseModel):
    title: str


async def test_langchain_chats_and_structured_output_fails_clearly(api: ApiServer) -> None:
    chat = ChatOpenAI(
        base_url=f"{api.url}/v1",
        api_key=SecretStr("unused"),
        model="switchboard",
        max_retries=0,
        default_headers={"X-Switchboard-User": "lang"},
    )
    answer = await chat.ainvoke("hello from langchain")
    assert str(answer.content).endswith("You said: hello from langchain")
    pieces = [str(chunk.content) async for chunk in chat.astream("streamed please")]
    assert "".join(pieces).endswith("You said: streamed please")

    for structured, param in (
        (chat.with_structured_output(Title, method="json_schema"), "response_format"),
        (chat.with_structured_output(Title, method="json_mode"), "response_format"),
        (chat.with_structured_output(Title, method="function_calling"), "tools"),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            await structured.ainvoke("title this")
        assert refused.value.param == param
        assert f"{param} is not supported" in refused.value.message


async def test_behind_a_trusted_proxy_the_forwarded_user_is_the_caller(
    settings: Settings, temporal_env: WorkflowEnvironment, worker: None, chat_model: object
) -> None:
    secret = "the-proxy-and-switchboard-share-this"
    target = temporal_env.client.service_client.config.target_host
    server = ApiServer(
        settings.model_copy(
            update={
                "temporal_address": target,
                "auth_mode": "proxy",
                "proxy_secret": SecretStr(secret),
            }
        )
    )
    await server.start()
    forwarded = {
        "X-Forwarded-User": "ann",
        "X-Forwarded-Tenant": "acme",
        "X-Forwarded-Roles": "requester",
    }
    hello: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello via proxy"}]
    try:
        proxied = openai.AsyncOpenAI(
            base_url=f"{server.url}/v1",
            api_key="unused",
            default_headers={**forwarded, "X-Switchboard-Proxy-Secret": secret},
            max_retries=0,
        )
        raw = await proxied.chat.completions.with_raw_response.create(
            model="switchboard", messages=hello
        )
        assert (raw.parse().choices[0].message.content or "").endswith("You said: hello via proxy")
        session_id = raw.headers["X-Switchboard-Session"]
        key = conversation_key(user_field=None, ids={}, first_user_message="hello via proxy")
        assert session_id == session_id_for("acme/ann", key)

        # The same headers without the secret, or with a wrong one, are nobody.
        for headers in (forwarded, {**forwarded, "X-Switchboard-Proxy-Secret": "guess"}):
            spoofed = openai.AsyncOpenAI(
                base_url=f"{server.url}/v1",
                api_key="unused",
                default_headers=headers,
                max_retries=0,
            )
            with pytest.raises(openai.AuthenticationError) as refused:
                await spoofed.chat.completions.create(model="switchboard", messages=hello)
            assert refused.value.status_code == 401
            await spoofed.close()
        async with httpx.AsyncClient(base_url=server.url, headers=forwarded) as http:
            assert (await http.get(f"/v1/sessions/{session_id}")).status_code == 401
        await proxied.close()
    finally:
        await server.stop()


async def test_live_progress_is_bounded_by_its_time_cap_on_both_apis(
    settings: Settings, temporal_env: WorkflowEnvironment, worker: None, chat_model: object
) -> None:
    target = temporal_env.client.service_client.config.target_host
    capped = {"temporal_address": target, "openai_stream_progress_seconds": 0.5}
    server = ApiServer(settings.model_copy(update=capped))
    await server.start()
    who = {"X-Switchboard-User": "gus"}
    oai = openai.AsyncOpenAI(
        base_url=f"{server.url}/v1", api_key="unused", default_headers=who, max_retries=0
    )
    texts: list[str] = []
    try:
        frontend = Frontend(oai)
        _, chatted = await frontend.say("just chatting", stream=True)
        assert "Progress" not in chatted, "an answer that started no task stayed open"
        started = asyncio.get_running_loop().time()
        async with asyncio.timeout(60):
            _, text = await frontend.say(
                "delegate: add a slugify helper in payments-service", stream=True
            )
        texts.append(text)
        elapsed = asyncio.get_running_loop().time() - started
        assert "started task-" in text and "Progress (live, for up to 0.5 s)" in text
        assert text.rstrip().endswith("the next answer opens with what happens next")
        assert elapsed < 15, elapsed

        # The Responses API streams the same progress before `response.completed`.
        completed = None
        async with asyncio.timeout(60):
            stream = await oai.responses.create(
                model="switchboard",
                input="delegate: add a kebab helper in payments-service",
                stream=True,
            )
            async for event in stream:
                if event.type == "response.completed":
                    completed = event.response
        assert completed is not None
        texts.append(completed.output_text)
        assert "started task-" in completed.output_text
        assert "Progress (live, for up to 0.5 s)" in completed.output_text
    finally:
        await oai.close()
        await _cancel_started(server.url, who, texts)
        await server.stop()


async def _cancel_started(url: str, headers: dict[str, str], texts: list[str]) -> None:
    """Cancel the tasks the answers started and wait until they end, so none is still
    running when the worker stops."""
    task_ids = {word for text in texts for word in text.split() if word.startswith("task-")}
    async with httpx.AsyncClient(base_url=url, headers=headers) as http, asyncio.timeout(90):
        for task_id in task_ids:
            await http.post(f"/v1/tasks/{task_id}/cancel")
        for task_id in task_ids:
            while not Phase((await http.get(f"/v1/tasks/{task_id}")).json()["phase"]).is_final:
                await asyncio.sleep(0.2)
