"""The scripted model server, driven by the official `openai` client over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from openai.types.chat import ChatCompletionMessageParam

from switchboard.model_server import (
    CONTROL_TOKEN_ENV,
    ModelServerHandle,
    Scenario,
    ScenarioError,
    ScriptedRole,
    builtin_scenario,
    control_token,
    create_app,
    load_scenario,
    parse_scenario,
    running_model_server,
)
from switchboard.models import Role, SubtaskSpec
from switchboard.tools import TOOL_ARGS, CheckedCall, DeniedCall, DenyReason, ToolName, check_call

Messages = list[ChatCompletionMessageParam]


@pytest.fixture(scope="module")
def server() -> Iterator[ModelServerHandle]:
    with running_model_server() as handle:
        yield handle


@pytest.fixture
def model(server: ModelServerHandle) -> ModelServerHandle:
    """The shared server, back to the demo scenario with no faults, stats or delays."""
    server.set_scenario(builtin_scenario("demo"))
    server.configure(latency_ms=0, token_rate=0)
    server.reset()
    return server


def client_for(handle: ModelServerHandle, **kwargs: Any) -> openai.AsyncOpenAI:
    kwargs.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=handle.base_url, api_key="scripted", **kwargs)


def headers(role: str, *, subagent: int = 0, task: str = "", call_id: str = "") -> dict[str, str]:
    found = {"X-Switchboard-Role": role, "X-Switchboard-Subagent": str(subagent)}
    if task:
        found["X-Switchboard-Task"] = task
    if call_id:
        found["X-Switchboard-Call-Id"] = call_id
    return found


async def collect_stream(stream: Any) -> dict[str, Any]:
    """Reassemble a streamed completion the way an OpenAI client application does."""
    content = ""
    calls: dict[int, dict[str, str]] = {}
    finish = None
    usage = None
    roles = []
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        delta = choice.delta
        if delta.role:
            roles.append(delta.role)
        content += delta.content or ""
        for part in delta.tool_calls or []:
            call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += part.id or ""
            if part.function is not None:
                call["name"] += part.function.name or ""
                call["arguments"] += part.function.arguments or ""
        finish = choice.finish_reason or finish
    return {
        "content": content,
        "tool_calls": [calls[i] for i in sorted(calls)],
        "finish_reason": finish,
        "usage": usage,
        "roles": roles,
    }


async def test_models_endpoint_lists_the_scripted_model(model: ModelServerHandle) -> None:
    listed = await client_for(model).models.list()
    assert [m.id for m in listed.data] == ["scripted"]


async def test_plain_text_reply_non_streaming(model: ModelServerHandle) -> None:
    messages: Messages = [{"role": "user", "content": "How are things?"}]
    reply = await client_for(model).chat.completions.create(model="any", messages=messages)

    choice = reply.choices[0]
    assert choice.message.content == "Scripted model here. You said: How are things?"
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert reply.model == "any"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == math.ceil(len("How are things?") / 4)
    assert reply.usage.completion_tokens == math.ceil(len(choice.message.content) / 4)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


async def test_plain_text_reply_streaming_with_usage(model: ModelServerHandle) -> None:
    stream = await client_for(model).chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": "Stream this please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    got = await collect_stream(stream)

    assert got["content"] == "Scripted model here. You said: Stream this please"
    assert got["roles"] == ["assistant"]
    assert got["finish_reason"] == "stop"
    assert got["tool_calls"] == []
    assert got["usage"].completion_tokens == math.ceil(len(got["content"]) / 4)


async def test_stream_wire_format_is_openai_sse(model: ModelServerHandle) -> None:
    body = {
        "model": "any",
        "messages": [{"role": "user", "content": "x"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{model.base_url}/chat/completions", json=body, headers=headers("worker")
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in response.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all("usage" in c for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    heads = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks[:-1]
        if "id" in (c["choices"][0]["delta"].get("tool_calls") or [{}])[0]
    ]
    assert heads == [
        {
            "index": 0,
            "id": heads[0]["id"],
            "type": "function",
            "function": {"name": "list_files", "arguments": ""},
        }
    ]


def worker_messages(first_user: str, assistant_turns: int) -> Messages:
    messages: Messages = [
        {"role": "system", "content": "You are a worker."},
        {"role": "user", "content": first_user},
    ]
    for n in range(assistant_turns):
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"c{n}",
                        "type": "function",
                        "function": {"name": "x", "arguments": "{}"},
                    }
                ],
            }
        )
        messages.append({"role": "tool", "tool_call_id": f"c{n}", "content": "result"})
    return messages


async def test_tool_calls_follow_the_turn_index_and_validate(model: ModelServerHandle) -> None:
    client = client_for(model)
    names = []
    for turn in range(6):
        reply = await client.chat.completions.create(
            model="any",
            messages=worker_messages("Add a slugify helper", turn),
            tools=[],
            extra_headers=headers("worker", subagent=4),
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls is not None
        for call in choice.message.tool_calls:
            assert call.type == "function"
            arguments = json.loads(call.function.arguments)
            TOOL_ARGS[ToolName(call.function.name)].model_validate(arguments)
            names.append(call.function.name)
            if call.function.name == "write_file":
                assert arguments["path"] == "src/feature_4.py"
                assert "subagent 4" in arguments["content"]
    # Five scripted turns, then the role's default (finish) for ever after.
    assert names == ["list_files", "read_file", "write_file", "run", "finish", "finish"]


async def test_streamed_tool_calls_match_the_non_streamed_ones(model: ModelServerHandle) -> None:
    client = client_for(model)
    messages = worker_messages("Add a slugify helper", 2)
    whole = await client.chat.completions.create(
        model="any", messages=messages, extra_headers=headers("worker", subagent=1)
    )
    stream = await client.chat.completions.create(
        model="any", messages=messages, stream=True, extra_headers=headers("worker", subagent=1)
    )
    got = await collect_stream(stream)

    calls = whole.choices[0].message.tool_calls
    assert calls is not None and calls[0].type == "function"
    assert got["finish_reason"] == "tool_calls"
    assert got["content"] == whole.choices[0].message.content == "Writing the helper."
    assert got["tool_calls"] == [
        {"id": calls[0].id, "name": "write_file", "arguments": calls[0].function.arguments}
    ]
    assert json.loads(got["tool_calls"][0]["arguments"])["path"] == "src/feature_1.py"


async def test_same_request_gets_the_same_answer(model: ModelServerHandle) -> None:
    client = client_for(model)
    replies = [
        await client.chat.completions.create(
            model="any",
            messages=worker_messages("Add a slugify helper", 1),
            extra_headers=headers("worker", subagent=2, task="task-1"),
        )
        for _ in range(2)
    ]
    first, second = (r.choices[0].message for r in replies)
    assert first.content == second.content
    assert first.tool_calls == second.tool_calls


TEMPLATED = Scenario.model_validate(
    {
        "roles": {
            "worker": [
                {
                    "content": "task={task} subagent={subagent} goal={goal} last={last_user}",
                    "tool_calls": [
                        {
                            "name": "write_file",
                            "arguments": {"path": "f{subagent}.txt", "content": "{goal}"},
                        },
                        {"name": "run", "arguments": '{"command": "echo {task}"}'},
                    ],
                }
            ]
        }
    }
)


async def test_templating_fills_headers_and_user_messages(model: ModelServerHandle) -> None:
    model.set_scenario(TEMPLATED)
    goal = 'Fix "quotes" and {braces} ' + "x" * 300
    messages: Messages = [
        {"role": "user", "content": goal},
        {"role": "user", "content": [{"type": "text", "text": "latest word"}]},
    ]
    reply = await client_for(model).chat.completions.create(
        model="any", messages=messages, extra_headers=headers("worker", subagent=7, task="task-9")
    )
    message = reply.choices[0].message
    assert message.content == f"task=task-9 subagent=7 goal={goal[:200]} last=latest word"
    assert message.tool_calls is not None
    write, run = (c.function for c in message.tool_calls if c.type == "function")
    # Object arguments are JSON-encoded after filling, so quotes stay valid JSON.
    assert json.loads(write.arguments) == {"path": "f7.txt", "content": goal[:200]}
    assert run.arguments == '{"command": "echo task-9"}'


SCRIPTED_BY_SUBTASK = Scenario.model_validate(
    {
        "roles": {
            "worker": {
                "scripts": [
                    {
                        "when": "greeting A",
                        "turns": [{"content": "A first"}, {"content": "A next"}],
                    },
                    {"when": "(?i)greeting b", "turns": [{"content": "B first"}]},
                    {
                        "when": "status",
                        "match": "last_user",
                        "index_from": "last_user",
                        "turns": [{"content": "status first"}],
                    },
                ],
                "turns": [{"content": "fallback"}],
                "default": {"content": "role default"},
            }
        }
    }
)


async def ask(handle: ModelServerHandle, messages: Messages, role: str = "worker") -> str | None:
    reply = await client_for(handle).chat.completions.create(
        model="any", messages=messages, extra_headers=headers(role)
    )
    return reply.choices[0].message.content


async def test_the_first_matching_script_wins(model: ModelServerHandle) -> None:
    model.set_scenario(SCRIPTED_BY_SUBTASK)
    assert await ask(model, [{"role": "user", "content": "Write greeting A"}]) == "A first"
    assert await ask(model, [{"role": "user", "content": "write GREETING B"}]) == "B first"
    after_one: Messages = [
        {"role": "user", "content": "Write greeting A"},
        {"role": "assistant", "content": "A first"},
    ]
    assert await ask(model, after_one) == "A next"
    after_one_b: Messages = [
        {"role": "user", "content": "Write greeting B"},
        {"role": "assistant", "content": "B first"},
    ]
    assert await ask(model, after_one_b) == "role default"
    assert await ask(model, [{"role": "user", "content": "something else"}]) == "fallback"
    chat: Messages = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "status?"},
    ]
    # Matched on the last user message, counted from it: a new exchange starts at 0.
    assert await ask(model, chat) == "status first"


async def test_unknown_role_header_is_a_clear_400(model: ModelServerHandle) -> None:
    with pytest.raises(openai.BadRequestError, match="unknown X-Switchboard-Role 'wizard'"):
        await ask(model, [{"role": "user", "content": "hi"}], role="wizard")


async def test_http_faults_surface_as_openai_errors(model: ModelServerHandle) -> None:
    client = client_for(model)
    messages: Messages = [{"role": "user", "content": "hi"}]
    model.add_fault("http_429", count=2)
    model.add_fault("http_500", role="worker")
    model.add_fault("http_401", role="reviewer")
    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="any", messages=messages)
    # The conversation role does not match the worker-only 500 fault.
    await client.chat.completions.create(model="any", messages=messages)
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(
            model="any", messages=messages, extra_headers=headers("worker")
        )
    with pytest.raises(openai.AuthenticationError):
        await client.chat.completions.create(
            model="any", messages=messages, extra_headers=headers("reviewer")
        )
    reply = await client.chat.completions.create(
        model="any", messages=messages, extra_headers=headers("worker")
    )
    assert reply.choices[0].message.tool_calls is not None
    stats = model.stats()
    assert stats["faults_injected"] == 4 and stats["pending_faults"] == []


async def explorer_arguments(handle: ModelServerHandle, *, stream: bool) -> str:
    client = client_for(handle)
    messages: Messages = [{"role": "user", "content": "Survey the package layout"}]
    if stream:
        got = await collect_stream(
            await client.chat.completions.create(
                model="any", messages=messages, stream=True, extra_headers=headers("explorer")
            )
        )
        arguments: str = got["tool_calls"][0]["arguments"]
        return arguments
    reply = await client.chat.completions.create(
        model="any", messages=messages, extra_headers=headers("explorer")
    )
    calls = reply.choices[0].message.tool_calls
    assert calls is not None and calls[0].type == "function"
    return calls[0].function.arguments


async def test_malformed_tool_json_fault(model: ModelServerHandle) -> None:
    model.add_fault("malformed_tool_json", role="explorer", count=2)
    # A text-only reply does not use up the fault: it waits for a tool call to break.
    assert await ask(model, [{"role": "user", "content": "hi"}], role="conversation")
    for stream in (False, True):
        arguments = await explorer_arguments(model, stream=stream)
        verdict = check_call(Role.EXPLORER, "c1", "list_files", arguments)
        assert isinstance(verdict, DeniedCall)
        assert verdict.reason is DenyReason.MALFORMED_ARGUMENTS
    arguments = await explorer_arguments(model, stream=False)
    assert isinstance(check_call(Role.EXPLORER, "c1", "list_files", arguments), CheckedCall)


async def test_hang_fault_times_out_the_client_and_the_server_recovers(
    model: ModelServerHandle,
) -> None:
    model.add_fault("hang", role="worker")
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        await client_for(model, timeout=0.5).chat.completions.create(
            model="any",
            messages=[{"role": "user", "content": "x"}],
            extra_headers=headers("worker"),
        )
    assert time.monotonic() - started < 3
    reply = await client_for(model).chat.completions.create(
        model="any", messages=[{"role": "user", "content": "x"}], extra_headers=headers("worker")
    )
    assert reply.choices[0].finish_reason == "tool_calls"


async def test_stopping_the_server_releases_a_hanging_request() -> None:
    with running_model_server() as handle:
        handle.add_fault("hang")
        client = client_for(handle, timeout=30)
        pending = asyncio.create_task(
            client.chat.completions.create(model="any", messages=[{"role": "user", "content": "x"}])
        )
        await asyncio.sleep(0.3)  # let the request reach the server and start hanging
        started = time.monotonic()
    assert time.monotonic() - started < 5
    with pytest.raises((openai.InternalServerError, openai.APIConnectionError)):
        await pending


async def test_stats_count_calls_and_report_duplicates(model: ModelServerHandle) -> None:
    client = client_for(model)
    messages: Messages = [{"role": "user", "content": "x"}]
    model.add_fault("http_500", count=1)
    for call_id in ("a", "a", "b", ""):
        with contextlib.suppress(openai.InternalServerError):
            await client.chat.completions.create(
                model="any", messages=messages, extra_headers=headers("worker", call_id=call_id)
            )
    await client.chat.completions.create(model="any", messages=messages)

    stats = model.stats()
    assert stats["total"] == 5
    assert stats["by_role"] == {"worker": 4, "conversation": 1}
    assert stats["by_call_id"] == {"a": 2, "b": 1}
    assert stats["duplicates"] == ["a"]
    # "a" failed the first time: it was requested twice but answered once.
    assert stats["answered_duplicates"] == []
    model.reset()
    assert model.stats()["total"] == 0


async def test_stats_say_when_each_call_paid_twice_was_answered(
    model: ModelServerHandle,
) -> None:
    """What B2 compares with its kill times: did a kill fall between the two answers?"""
    client = client_for(model)
    messages: Messages = [{"role": "user", "content": "x"}]
    before = time.time()
    for call_id in ("c", "d", "c"):
        await client.chat.completions.create(
            model="any", messages=messages, extra_headers=headers("worker", call_id=call_id)
        )
    after = time.time()
    answered = model.stats()["answered_twice_at"]
    assert list(answered) == ["c"]
    asked, got = answered["c"]["requested"], answered["c"]["answered"]
    assert before <= asked[0] <= got[0] <= asked[1] <= got[1] <= after
    model.reset()
    assert model.stats()["answered_twice_at"] == {}


async def test_stats_count_the_calls_in_flight(model: ModelServerHandle) -> None:
    """What a benchmark reads at a kill: requests not yet answered, faults excluded."""
    client = client_for(model)
    messages: Messages = [{"role": "user", "content": "z"}]
    model.configure(latency_ms=1000)
    calls = [
        asyncio.create_task(
            client.chat.completions.create(
                model="any", messages=messages, extra_headers=headers("worker", call_id=f"c{i}")
            )
        )
        for i in range(3)
    ]
    for _ in range(100):
        if (await asyncio.to_thread(model.stats))["in_flight"] == 3:
            break
        await asyncio.sleep(0.02)
    assert (await asyncio.to_thread(model.stats))["in_flight"] == 3
    await asyncio.gather(*calls)
    model.configure(latency_ms=0)
    model.add_fault("http_500", count=1)
    with contextlib.suppress(openai.InternalServerError):
        await client.chat.completions.create(model="any", messages=messages)
    for _ in range(100):  # a reply counts until it is sent whole, a moment after it arrives
        if (await asyncio.to_thread(model.stats))["in_flight"] == 0:
            break
        await asyncio.sleep(0.02)
    assert (await asyncio.to_thread(model.stats))["in_flight"] == 0


async def test_latency_and_token_rate_slow_replies(model: ModelServerHandle) -> None:
    client = client_for(model)
    messages: Messages = [{"role": "user", "content": "y" * 40}]
    model.configure(latency_ms=300)
    started = time.monotonic()
    await client.chat.completions.create(model="any", messages=messages)
    assert time.monotonic() - started >= 0.3

    model.configure(latency_ms=0, token_rate=100)
    started = time.monotonic()
    got = await collect_stream(
        await client.chat.completions.create(model="any", messages=messages, stream=True)
    )
    # The reply is ~20 tokens: about 0.2 s at 100 tokens/s.
    assert time.monotonic() - started >= len(got["content"]) / 4 / 100 * 0.9


def test_bad_scenario_files_give_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ScenarioError, match="cannot read scenario file"):
        load_scenario(missing)

    broken = tmp_path / "broken.yaml"
    broken.write_text("roles: [unclosed\n")
    with pytest.raises(ScenarioError, match="is not valid YAML"):
        load_scenario(broken)

    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{nope")
    with pytest.raises(ScenarioError, match="is not valid JSON"):
        load_scenario(bad_json)

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(
        "roles:\n"
        "  wizard: []\n"
        "  worker:\n"
        "    - tool_calls: [{arguments: {}}]\n"
        "    - {}\n"
        "  explorer:\n"
        "    scripts: [{when: '(', turns: []}]\n"
    )
    with pytest.raises(ScenarioError) as raised:
        load_scenario(wrong)
    message = str(raised.value)
    assert str(wrong) in message
    assert "roles.wizard" in message
    assert "roles.worker.turns.0.tool_calls.0.name: Field required" in message
    assert "a turn needs `content`, `tool_calls` or both" in message
    assert "`when` is not a valid regular expression" in message

    good = tmp_path / "good.json"
    good.write_text(json.dumps({"name": "tiny", "roles": {"worker": [{"content": "hi"}]}}))
    assert load_scenario(good).name == "tiny"
    with pytest.raises(ScenarioError, match=r"no built-in scenario 'nope'; built-in: .*demo"):
        builtin_scenario("nope")


async def test_posting_a_bad_scenario_is_refused(model: ModelServerHandle) -> None:
    headers = {"Authorization": f"Bearer {model.token}"}
    async with httpx.AsyncClient(headers=headers) as http:
        response = await http.post(f"{model.url}/_scenario", json={"roles": {"worker": [{}]}})
    assert response.status_code == 400
    assert "roles.worker.turns.0" in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/_scenario", {"name": "evil", "roles": {"worker": [{"content": "pwned"}]}}),
        ("POST", "/_faults", {"kind": "hang"}),
        ("POST", "/_config", {"latency_ms": 600000}),
        ("POST", "/_reset", None),
        ("GET", "/_config", None),
        ("GET", "/_stats", None),
    ],
)
async def test_control_endpoints_need_the_token(
    model: ModelServerHandle, method: str, path: str, body: object
) -> None:
    before = model.stats()
    async with httpx.AsyncClient(base_url=model.url) as http:
        missing = await http.request(method, path, json=body)
        wrong = await http.request(
            method, path, json=body, headers={"Authorization": "Bearer not-the-token"}
        )
        basic = await http.request(
            method, path, json=body, headers={"Authorization": f"Basic {model.token}"}
        )
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["detail"]
    assert wrong.status_code == 403
    assert basic.status_code == 401
    # Nothing changed: the same scenario plays, no fault is pending, no knob moved.
    assert model.stats() == before
    assert model._call("GET", "/_scenario")["name"] == "demo"
    assert model._call("GET", "/_config")["latency_ms"] == 0


def test_serve_takes_its_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONTROL_TOKEN_ENV, "from-env")
    assert ModelServerHandle(1).token == "from-env"
    assert control_token(create_app(control_token="given")) == "given"
    assert control_token(create_app()) != control_token(create_app())  # generated, unguessable


def demo_user_message(role: str, title: str) -> str:
    return f"{title}\n\nInstructions for the {role}."


@pytest.mark.parametrize(
    ("role", "title"),
    [
        (Role.WORKER, "Add a slugify helper"),
        (Role.WORKER, "Add tests for slugify"),
        (Role.EXPLORER, "Survey the package layout"),
        (Role.REVIEWER, "Review the combined diff"),
    ],
)
async def test_demo_tool_calls_pass_the_role_checks(
    model: ModelServerHandle, role: Role, title: str
) -> None:
    client = client_for(model)
    messages: Messages = [{"role": "user", "content": demo_user_message(role.value, title)}]
    written = []
    for _ in range(10):
        reply = await client.chat.completions.create(
            model="any", messages=messages, extra_headers=headers(role.value, subagent=3)
        )
        message = reply.choices[0].message
        assert message.tool_calls, f"the demo {role} must always call a tool"
        finished = False
        for call in message.tool_calls:
            assert call.type == "function"
            checked = check_call(role, call.id, call.function.name, call.function.arguments)
            assert isinstance(checked, CheckedCall), checked
            finished = finished or checked.name is ToolName.FINISH
            if checked.name is ToolName.WRITE_FILE:
                written.append(checked.arguments["path"])
            if checked.name is ToolName.FINISH and role is Role.REVIEWER:
                assert checked.arguments["verdict"] == "approve"
        if finished:
            break
        messages.append(message.model_dump(exclude_none=True))  # type: ignore[arg-type]
        for call in message.tool_calls:
            messages.append({"role": "tool", "tool_call_id": call.id, "content": "ok"})
    assert finished
    if role is Role.WORKER:
        expected = "tests/test_feature_3.py" if "tests" in title else "src/feature_3.py"
        assert written == [expected]


async def test_demo_plan_and_conversation(model: ModelServerHandle) -> None:
    client = client_for(model)
    reply = await client.chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": "Add slugify"}],
        extra_headers=headers("planner"),
    )
    calls = reply.choices[0].message.tool_calls
    assert calls is not None and calls[0].type == "function"
    assert calls[0].function.name == "submit_plan"
    subtasks = [
        SubtaskSpec.model_validate(s) for s in json.loads(calls[0].function.arguments)["subtasks"]
    ]
    assert [s.role for s in subtasks] == [Role.WORKER, Role.WORKER, Role.EXPLORER]
    assert all("Add slugify" in s.instructions for s in subtasks)
    assert await ask(model, [{"role": "user", "content": "hey"}], role="conversation") == (
        "Scripted model here. You said: hey"
    )


def test_every_builtin_scenario_loads() -> None:
    for name in ("demo", "conflict"):
        scenario = builtin_scenario(name)
        assert scenario.name == name
        assert parse_scenario(scenario.model_dump(mode="json")) == scenario


def test_the_documented_example_scenario_is_valid() -> None:
    doc = Path(__file__).parents[2] / "docs" / "model-server.md"
    block = re.search(r"```yaml\n(.*?)```", doc.read_text(), re.DOTALL)
    assert block is not None
    scenario = parse_scenario(yaml.safe_load(block.group(1)))
    assert scenario.roles[ScriptedRole.CONVERSATION].scripts[0].match == "last_user"
