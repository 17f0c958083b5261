"""Per-tenant limits over real HTTP: two API processes (two apps, one Temporal dev
server, one real worker), static API tokens, tasks run by the scripted model. Every
count is read from Temporal, so both processes see the same limits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from api.main import create_app
from entrypoints.cli import app
from switchboard import wire
from switchboard.api_tokens import TokenStore
from switchboard.identity import Role
from switchboard.limits import CONCURRENT_RETRY_SECONDS, TenantLimits, seconds_to_midnight
from switchboard.models import DEFAULT_PARALLEL, EventKind, TaskRequest
from switchboard.settings import Settings
from testkit import serving
from tests.integration.test_api import read_sse

pytestmark = pytest.mark.integration

_RUN = uuid.uuid4().hex[:8]
"""Tenant names of this run: the dev server (and its visibility) is the session's."""
ACME, INITECH, UMBRELLA, GLOBEX = (
    f"{name}-{_RUN}" for name in ("acme", "initech", "umbrella", "globex")
)
USERS = {
    "ann": ACME,  # one task at a time
    "bob": ACME,
    "ivy": INITECH,  # one token a day, so spent by any task
    "uma": UMBRELLA,  # one subagent at a time per task
    "gus": GLOBEX,  # the default (no limits)
}


@pytest.fixture
def limited(settings: Settings, temporal_env: WorkflowEnvironment) -> Settings:
    return settings.model_copy(
        update={
            "temporal_address": temporal_env.client.service_client.config.target_host,
            "auth_mode": "tokens",
            "tenant_limits": {
                ACME: TenantLimits(concurrent_tasks=1),
                INITECH: TenantLimits(tokens_per_day=1),
                UMBRELLA: TenantLimits(parallel_subagents=1),
            },
        }
    )


@pytest.fixture
def tokens(limited: Settings) -> dict[str, dict[str, str]]:
    store = TokenStore(limited.api_tokens_file)
    headers: dict[str, dict[str, str]] = {}
    for user, tenant in USERS.items():
        token, _ = store.create(subject=user, tenant=tenant, roles=[Role.REQUESTER])
        headers[user] = {"Authorization": f"Bearer {token}"}
    return headers


@pytest.fixture
async def apis(limited: Settings, worker: None) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two API processes' worth of apps over the same Temporal."""
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(2):
            url = await stack.enter_async_context(serving(create_app(limited)))
            clients.append(
                await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=60))
            )
        yield clients


def _body(repo: Path, **extra: Any) -> dict[str, Any]:
    return {
        "goal": "Add a helper",
        "repo": str(repo),
        "subtasks": [{"title": "Helper"}],
        "review": False,
        **extra,
    }


async def _until(
    predicate: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0
) -> None:
    """Visibility lags the workflow a moment: poll it with a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def _running_is(client: Client, tenant: str, expected: int) -> bool:
    query = (
        f"WorkflowType = '{wire.Workflows.TASK}' AND SwitchboardTenant = '{tenant}' "
        "AND ExecutionStatus = 'Running'"
    )
    return (await client.count_workflows(query)).count == expected


async def test_concurrent_tasks_are_limited_per_tenant_across_api_processes(
    apis: list[httpx.AsyncClient], tokens: dict[str, dict[str, str]], client: Client, repo: Path
) -> None:
    first, second = apis
    created = await first.post(
        "/v1/tasks", json=_body(repo, request_id="r1"), headers=tokens["ann"]
    )
    assert created.status_code == 201, created.text
    task_id = created.json()["task_id"]
    await _until(lambda: _running_is(client, ACME, 1), "the task in visibility")

    # The other process, another user of the same tenant: refused, naming the limit.
    refused = await second.post("/v1/tasks", json=_body(repo), headers=tokens["bob"])
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"] == str(CONCURRENT_RETRY_SECONDS)
    detail = refused.json()["detail"]
    assert "concurrent tasks" in detail and f"'{ACME}'" in detail and "1 at once" in detail

    # A retry of the request that started the task still answers with that task.
    retried = await second.post(
        "/v1/tasks", json=_body(repo, request_id="r1"), headers=tokens["ann"]
    )
    assert retried.status_code == 200 and retried.json()["task_id"] == task_id

    # Delegating in a chat (the OpenAI surface): the chat answers and says which limit.
    chat = openai.AsyncOpenAI(
        base_url=f"{second.base_url}/v1",
        api_key=tokens["bob"]["Authorization"].removeprefix("Bearer "),
        default_headers={"X-Switchboard-Repo": str(repo)},
        max_retries=0,
    )
    async with chat:
        reply = await chat.chat.completions.create(
            model="switchboard",
            messages=[{"role": "user", "content": "delegate: add a slugify helper"}],
            user="bob-chat",
        )
    assert "limit on concurrent tasks reached" in (reply.choices[0].message.content or "")
    await _until(lambda: _running_is(client, ACME, 1), "no task started by the chat")

    # Another tenant is not held by acme's limit.
    other = await second.post("/v1/tasks", json=_body(repo), headers=tokens["gus"])
    assert other.status_code == 201, other.text

    # Once acme's task ends, acme may start another (through either process).
    cancelled = await first.post(f"/v1/tasks/{task_id}/cancel", headers=tokens["ann"])
    assert cancelled.status_code == 202, cancelled.text
    await _until(lambda: _running_is(client, ACME, 0), "the task to end", timeout=60)
    again = await second.post("/v1/tasks", json=_body(repo), headers=tokens["bob"])
    assert again.status_code == 201, again.text


async def test_tokens_per_day_are_counted_from_what_the_workflows_record(
    apis: list[httpx.AsyncClient], tokens: dict[str, dict[str, str]], client: Client, repo: Path
) -> None:
    first, second = apis
    ivy = tokens["ivy"]
    created = await first.post("/v1/tasks", json=_body(repo), headers=ivy)
    assert created.status_code == 201, created.text
    task_id = created.json()["task_id"]
    await read_sse(first, f"/v1/tasks/{task_id}/events", ivy, until=EventKind.APPROVAL_NEEDED)
    status = (await first.get(f"/v1/tasks/{task_id}", headers=ivy)).json()
    spent = sum(subagent["tokens"] for subagent in status["subagents"])
    assert spent > 0, "the scripted model reports usage"

    async def recorded() -> bool:
        description = await client.get_workflow_handle(task_id).describe()
        return bool(description.typed_search_attributes.get(wire.SearchAttributes.TOKENS) == spent)

    await _until(recorded, "SwitchboardTokens")
    refused = await second.post("/v1/tasks", json=_body(repo), headers=ivy)
    assert refused.status_code == 429, refused.text
    detail = refused.json()["detail"]
    assert "tokens per day" in detail and f"spent {spent} tokens" in detail
    retry_after = int(refused.headers["retry-after"])
    assert 0 < retry_after <= 24 * 3600
    # Nothing was started for the refused request.
    query = f"WorkflowType = '{wire.Workflows.TASK}' AND SwitchboardTenant = '{INITECH}'"
    assert (await client.count_workflows(query)).count == 1


async def test_parallel_subagents_are_capped_in_the_task_input(
    apis: list[httpx.AsyncClient], tokens: dict[str, dict[str, str]], client: Client, repo: Path
) -> None:
    uma = tokens["uma"]
    body = _body(repo, max_parallel=4, subtasks=[{"title": "One"}, {"title": "Two"}])
    created = await apis[0].post("/v1/tasks", json=body, headers=uma)
    assert created.status_code == 201, created.text
    submitted = created.json()
    assert "max_parallel lowered from 4 to 1" in submitted["notice"]
    assert f"'{UMBRELLA}'" in submitted["notice"]
    task_id = submitted["task_id"]

    history = await client.get_workflow_handle(task_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    (request,) = await client.data_converter.decode(started.input.payloads, [TaskRequest])
    assert isinstance(request, TaskRequest) and request.max_parallel == 1

    await read_sse(apis[0], f"/v1/tasks/{task_id}/events", uma, until=EventKind.APPROVAL_NEEDED)
    one, two = (await apis[0].get(f"/v1/tasks/{task_id}", headers=uma)).json()["subagents"]
    ordered = sorted([one, two], key=lambda s: s["started_at"])
    assert ordered[0]["finished_at"] <= ordered[1]["started_at"], "ran one at a time"

    # A chat delegation is capped alike, and the chat says so.
    chat = openai.AsyncOpenAI(
        base_url=f"{apis[1].base_url}/v1",
        api_key=uma["Authorization"].removeprefix("Bearer "),
        default_headers={"X-Switchboard-Repo": str(repo)},
        max_retries=0,
    )
    async with chat:
        reply = await chat.chat.completions.create(
            model="switchboard",
            messages=[{"role": "user", "content": "delegate: add a slugify helper"}],
            user="uma-chat",
        )
    lowered = f"max_parallel lowered from {DEFAULT_PARALLEL} to 1"
    assert lowered in (reply.choices[0].message.content or "")

    # Without a cap the request is kept as asked, and no notice is given.
    free = await apis[1].post("/v1/tasks", json=body, headers=tokens["gus"])
    assert free.status_code == 201 and free.json()["notice"] is None


async def test_the_cli_says_when_a_limit_lowered_the_parallel_subagents(
    apis: list[httpx.AsyncClient], tokens: dict[str, dict[str, str]], repo: Path, tmp_path: Path
) -> None:
    env: dict[str, str | None] = {
        "SWITCHBOARD_API_URL": str(apis[0].base_url),
        "SWITCHBOARD_TOKEN": tokens["uma"]["Authorization"].removeprefix("Bearer "),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    args = ["task", "submit", "--repo", str(repo), "--goal", "Add a helper", "--max-parallel",
            "4", "--subtask", "One", "--subtask", "Two", "--no-review"]  # fmt: skip
    runner = CliRunner()
    result = await asyncio.to_thread(lambda: runner.invoke(app, args, env=env))
    assert result.exit_code == 0, result.output
    task_id = result.stdout.strip()
    assert task_id.startswith("task-")  # stdout stays the id alone, for scripts
    assert (
        f"note: max_parallel lowered from 4 to 1: the limit on parallel subagents of "
        f"tenant '{UMBRELLA}'" in result.stderr
    )
    cancelled = await apis[0].post(f"/v1/tasks/{task_id}/cancel", headers=tokens["uma"])
    assert cancelled.status_code == 202, cancelled.text

    # Not capped: no note.
    env["SWITCHBOARD_TOKEN"] = tokens["gus"]["Authorization"].removeprefix("Bearer ")
    free = await asyncio.to_thread(lambda: runner.invoke(app, args, env=env))
    assert free.exit_code == 0 and "note:" not in free.stderr, free.output
    cancelled = await apis[0].post(f"/v1/tasks/{free.stdout.strip()}/cancel", headers=tokens["gus"])
    assert cancelled.status_code == 202, cancelled.text


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SWITCHBOARD_TENANT_LIMITS", '{"acme": {"concurrent_tasks": 5, "tokens_per_day": 900}}'
    )
    monkeypatch.setenv("SWITCHBOARD_DEFAULT_TENANT_LIMITS", '{"parallel_subagents": 2}')
    settings = Settings(_env_file=None)
    assert settings.tenant_limits["acme"] == TenantLimits(concurrent_tasks=5, tokens_per_day=900)
    assert settings.default_tenant_limits.parallel_subagents == 2
    monkeypatch.setenv("SWITCHBOARD_DEFAULT_TENANT_LIMITS", '{"parallel_subagent": 2}')
    with pytest.raises(ValueError, match="parallel_subagent"):
        Settings(_env_file=None)


def test_retry_after_a_day_limit_is_the_next_utc_midnight() -> None:
    assert seconds_to_midnight(datetime(2026, 12, 3, 23, 59, 30, tzinfo=UTC)) == 30
    assert seconds_to_midnight(datetime(2026, 12, 3, 0, 0, 0, tzinfo=UTC)) == 24 * 3600
