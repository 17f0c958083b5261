"""The model-calling activities against a real scripted model server over HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import llm
from activities._heartbeat import heartbeating
from activities.llm import LlmActivities
from switchboard import model_server
from switchboard.contracts import ChatMessage, LlmTurnInput, PlanInput
from switchboard.model_server import ModelServerHandle, Scenario, builtin_scenario
from switchboard.models import Role
from switchboard.settings import Settings
from switchboard.step_heartbeat import StepHeartbeat, StepStage
from switchboard.tools import CheckedCall, check_call
from switchboard.wire import Errors


@pytest.fixture(scope="module")
def server() -> Iterator[ModelServerHandle]:
    with model_server.running_model_server() as handle:
        yield handle


@pytest.fixture
def model(server: ModelServerHandle) -> ModelServerHandle:
    server.set_scenario(builtin_scenario("demo"))
    server.configure(latency_ms=0, token_rate=0)
    server.reset()
    return server


def settings_for(base_url: str, data_dir: Path, **kwargs: Any) -> Settings:
    return Settings(data_dir=data_dir, llm_base_url=base_url, **kwargs)


@pytest.fixture
async def acts(model: ModelServerHandle, tmp_data_dir: Path) -> AsyncIterator[LlmActivities]:
    activities = LlmActivities(settings_for(model.base_url, tmp_data_dir))
    yield activities
    await activities.close()


def first_turn(call_id: str = "task-1/0/1", **kwargs: Any) -> LlmTurnInput:
    values: dict[str, Any] = {
        "transcript_id": "task-1/subagent-0",
        "call_id": call_id,
        "role": Role.WORKER,
        "expected_length": 0,
        "new_messages": [
            ChatMessage(role="system", content="You are a worker."),
            ChatMessage(role="user", content="Add a slugify helper"),
        ],
        "task_id": "task-1",
        "subagent": 2,
    }
    values.update(kwargs)
    return LlmTurnInput.model_validate(values)


async def expect_error(coro: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as raised:
        await coro
    return raised.value


async def test_transcript_grows_turn_by_turn(acts: LlmActivities, tmp_data_dir: Path) -> None:
    env = ActivityEnvironment()
    first = await env.run(acts.turn, first_turn())

    assert first.transcript_length == 3
    assert first.finish_reason == "tool_calls"
    assert [c.name for c in first.tool_calls] == ["list_files"]
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens > 0
    # Raw argument strings, checked later in the workflow.
    call = first.tool_calls[0]
    assert isinstance(check_call(Role.WORKER, call.id, call.name, call.arguments), CheckedCall)

    second = await env.run(
        acts.turn,
        first_turn(
            "task-1/0/2",
            expected_length=first.transcript_length,
            new_messages=[ChatMessage(role="tool", tool_call_id=call.id, content="README.md")],
        ),
    )
    assert second.transcript_length == 5
    assert [c.name for c in second.tool_calls] == ["read_file"]

    path = tmp_data_dir / "transcripts" / "task-1" / "subagent-0.json"
    saved = [ChatMessage.model_validate(m) for m in json.loads(path.read_text())]
    assert [m.role for m in saved] == ["system", "user", "assistant", "tool", "assistant"]
    assert saved[2].tool_calls == first.tool_calls
    assert saved[4].tool_calls == second.tool_calls
    assert not list(path.parent.glob("*.tmp"))


async def test_a_retried_turn_reuses_the_recorded_reply(
    acts: LlmActivities, model: ModelServerHandle, tmp_data_dir: Path
) -> None:
    """The worker died after the model answered: the retry does not pay again."""
    env = ActivityEnvironment()
    first = await env.run(acts.turn, first_turn())
    retried = await env.run(acts.turn, first_turn())

    assert retried.transcript_length == first.transcript_length == 3
    assert retried.tool_calls == first.tool_calls
    assert retried.finish_reason == "recorded"
    assert retried.usage.total_tokens == 0  # counted by the first attempt
    path = tmp_data_dir / "transcripts" / "task-1" / "subagent-0.json"
    assert len(json.loads(path.read_text())) == 3

    stats = model.stats()
    assert stats["by_call_id"] == {"task-1/0/1": 1}
    assert stats["duplicates"] == []


async def test_a_turn_with_other_messages_replaces_the_recorded_reply(
    acts: LlmActivities, model: ModelServerHandle, tmp_data_dir: Path
) -> None:
    """Only an identical prompt reuses a reply; otherwise the model is asked anew."""
    env = ActivityEnvironment()
    await env.run(acts.turn, first_turn())
    other = first_turn(new_messages=[ChatMessage(role="user", content="something else")])
    again = await env.run(acts.turn, other)

    assert again.transcript_length == 2
    path = tmp_data_dir / "transcripts" / "task-1" / "subagent-0.json"
    saved = [ChatMessage.model_validate(m) for m in json.loads(path.read_text())]
    assert [m.role for m in saved] == ["user", "assistant"]
    assert saved[0].content == "something else"
    assert model.stats()["by_call_id"] == {"task-1/0/1": 2}


async def test_headers_reach_the_model(acts: LlmActivities, model: ModelServerHandle) -> None:
    scenario = Scenario.model_validate(
        {"roles": {"explorer": [{"content": "task={task} subagent={subagent}"}]}}
    )
    model.set_scenario(scenario)
    result = await ActivityEnvironment().run(
        acts.turn, first_turn("call-x", role=Role.EXPLORER, task_id="task-7", subagent=5)
    )
    assert result.content == "task=task-7 subagent=5"
    assert result.tool_calls == []
    assert result.finish_reason == "stop"
    assert model.stats()["by_call_id"] == {"call-x": 1}
    assert model.stats()["by_role"] == {"explorer": 1}


async def test_planner_parses_the_demo_plan(acts: LlmActivities, model: ModelServerHandle) -> None:
    env = ActivityEnvironment()
    plan = await env.run(
        acts.plan_subtasks, PlanInput(task_id="task-3", goal="Add slugify", repo="/tmp/repo")
    )
    assert [s.title for s in plan.subtasks] == [
        "Add a slugify helper",
        "Add tests for slugify",
        "Survey the package layout",
    ]
    assert [s.role for s in plan.subtasks] == [Role.WORKER, Role.WORKER, Role.EXPLORER]
    assert all("Goal: Add slugify" in s.instructions for s in plan.subtasks)
    assert plan.tokens > 0

    clipped = await env.run(
        acts.plan_subtasks,
        PlanInput(task_id="task-3", goal="Add slugify", repo="/tmp/repo", max_subtasks=2),
    )
    assert len(clipped.subtasks) == 2
    assert model.stats()["by_role"] == {"planner": 2}


@pytest.mark.parametrize(
    ("planner_turn", "why"),
    [
        ({"content": "I think you should just do it."}, "no submit_plan tool call"),
        (
            {"tool_calls": [{"name": "submit_plan", "arguments": {"subtasks": []}}]},
            "subtasks: List should have at least 1 item",
        ),
        (
            {
                "tool_calls": [
                    {
                        "name": "submit_plan",
                        "arguments": {"subtasks": [{"title": "Hack", "role": "wizard"}]},
                    }
                ]
            },
            "subtasks.0.role",
        ),
        (
            {"tool_calls": [{"name": "submit_plan", "arguments": '{"subtasks": [{"ti'}]},
            "not valid JSON",
        ),
    ],
)
async def test_planner_garbage_is_model_output_invalid(
    acts: LlmActivities, model: ModelServerHandle, planner_turn: dict[str, Any], why: str
) -> None:
    model.set_scenario(Scenario.model_validate({"roles": {"planner": [planner_turn]}}))
    error = await expect_error(
        ActivityEnvironment().run(acts.plan_subtasks, PlanInput(task_id="t", goal="g", repo="r"))
    )
    assert error.type == Errors.MODEL_OUTPUT_INVALID
    assert not error.non_retryable
    assert error.message.startswith("the planner model returned no usable plan: ")
    assert why in error.message


@pytest.mark.parametrize("kind", ["http_500", "http_429"])
async def test_server_errors_are_retryable_model_unavailable(
    acts: LlmActivities, model: ModelServerHandle, tmp_data_dir: Path, kind: str
) -> None:
    model.add_fault(kind, role="worker")
    error = await expect_error(ActivityEnvironment().run(acts.turn, first_turn()))
    assert error.type == Errors.MODEL_UNAVAILABLE
    assert not error.non_retryable
    assert kind.removeprefix("http_") in error.message
    # Nothing was written: the retry starts from the same transcript.
    assert not (tmp_data_dir / "transcripts" / "task-1" / "subagent-0.json").exists()
    retried = await ActivityEnvironment().run(acts.turn, first_turn())
    assert retried.transcript_length == 3


async def test_refused_requests_are_not_retryable(
    acts: LlmActivities, model: ModelServerHandle
) -> None:
    model.add_fault("http_401", role="planner")
    error = await expect_error(
        ActivityEnvironment().run(acts.plan_subtasks, PlanInput(task_id="t", goal="g", repo="r"))
    )
    assert error.type == Errors.MODEL_UNAVAILABLE
    assert error.non_retryable
    assert "401" in error.message and "SWITCHBOARD_LLM_API_KEY" in error.message


async def test_unreachable_and_slow_models_are_retryable(
    model: ModelServerHandle, tmp_data_dir: Path
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    nowhere = LlmActivities(settings_for(f"http://127.0.0.1:{closed_port}/v1", tmp_data_dir))
    error = await expect_error(ActivityEnvironment().run(nowhere.turn, first_turn()))
    assert error.type == Errors.MODEL_UNAVAILABLE and not error.non_retryable
    await nowhere.close()

    model.add_fault("hang")
    impatient = LlmActivities(settings_for(model.base_url, tmp_data_dir, llm_timeout_seconds=0.5))
    error = await expect_error(ActivityEnvironment().run(impatient.turn, first_turn()))
    assert error.type == Errors.MODEL_UNAVAILABLE and not error.non_retryable
    assert "did not answer in time" in error.message
    await impatient.close()


async def test_bad_transcripts_are_invalid_input(acts: LlmActivities) -> None:
    env = ActivityEnvironment()
    escaping = await expect_error(env.run(acts.turn, first_turn(transcript_id="../../etc")))
    assert escaping.type == Errors.INVALID_INPUT and escaping.non_retryable

    lost = await expect_error(env.run(acts.turn, first_turn(expected_length=4)))
    assert lost.type == Errors.INVALID_INPUT and lost.non_retryable
    assert "has 0 messages but this turn expects 4" in lost.message


async def test_heartbeats_while_waiting_for_the_model(
    acts: LlmActivities, model: ModelServerHandle
) -> None:
    model.configure(latency_ms=400)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(milliseconds=200))
    beats: list[tuple[Any, ...]] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    result = await env.run(acts.turn, first_turn())
    assert result.transcript_length == 3
    assert len(beats) >= 2


async def test_cancellation_reaches_the_model_call(
    acts: LlmActivities, model: ModelServerHandle
) -> None:
    model.add_fault("hang")
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(milliseconds=200))
    running = asyncio.create_task(env.run(acts.turn, first_turn()))
    await asyncio.sleep(0.5)
    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 5)


async def test_heartbeating_returns_the_result_without_an_activity_timeout() -> None:
    async def answer() -> int:
        await asyncio.sleep(0.01)
        return 42

    assert await ActivityEnvironment().run(heartbeating, answer()) == 42


def test_header_names_match_the_model_server() -> None:
    assert llm.ROLE_HEADER == model_server.ROLE_HEADER
    assert llm.CALL_ID_HEADER == model_server.CALL_ID_HEADER
    assert llm.TASK_HEADER == model_server.TASK_HEADER
    assert llm.SUBAGENT_HEADER == model_server.SUBAGENT_HEADER


async def test_a_retried_plan_reuses_the_recorded_reply(
    acts: LlmActivities, model: ModelServerHandle, tmp_data_dir: Path
) -> None:
    """The worker died after the planner answered: the retry does not pay again."""
    env = ActivityEnvironment()  # same workflow run and activity id: a retried attempt
    plan_input = PlanInput(task_id="task-9", goal="Add slugify", repo="/tmp/repo")
    first = await env.run(acts.plan_subtasks, plan_input)
    retried = await env.run(acts.plan_subtasks, plan_input)

    assert retried.subtasks == first.subtasks
    assert first.tokens > 0 and retried.tokens == 0  # counted by the first attempt
    assert model.stats()["by_role"] == {"planner": 1}
    assert len(list((tmp_data_dir / "transcripts" / "task-9").glob("plan-*.json"))) == 1

    another_run = ActivityEnvironment()
    another_run.info = dataclasses.replace(env.info, workflow_run_id="another-run")
    await another_run.run(acts.plan_subtasks, plan_input)
    assert model.stats()["by_role"] == {"planner": 2}


async def test_a_bad_plan_is_not_reused_by_the_retry(
    acts: LlmActivities, model: ModelServerHandle
) -> None:
    model.add_fault("malformed_tool_json", role="planner")
    env = ActivityEnvironment()
    plan_input = PlanInput(task_id="task-8", goal="Add slugify", repo="/tmp/repo")
    error = await expect_error(env.run(acts.plan_subtasks, plan_input))
    assert error.type == Errors.MODEL_OUTPUT_INVALID
    plan = await env.run(acts.plan_subtasks, plan_input)  # asks again, gets a good plan
    assert len(plan.subtasks) == 3
    assert model.stats()["by_role"] == {"planner": 2}


async def test_heartbeats_say_the_activity_waits_on_the_model(
    acts: LlmActivities, model: ModelServerHandle
) -> None:
    model.configure(latency_ms=1_300)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(milliseconds=400))
    beats: list[tuple[Any, ...]] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    await env.run(acts.turn, first_turn())
    waits = [d[0] for d in beats if d and isinstance(d[0], StepHeartbeat)]
    assert len(waits) >= 2 and all(w.stage is StepStage.MODEL for w in waits)
    assert waits[0].role == "worker"
    assert waits[-1].describe(waits[-1].since + timedelta(seconds=42)) == (
        "waiting on the model for 42 s"
    )
