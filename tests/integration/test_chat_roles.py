"""Decisions by words carry the speaker's verified roles: the chat tools act as the API
would for the same token. The real identity provider (tests/idp), the API under
uvicorn with `auth_mode=tokens,oidc`, the real workflows and worker, the scripted
model, and the official `openai` client with `api_key=<token>`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from temporalio.testing import WorkflowEnvironment

from switchboard import wire
from switchboard.models import Phase
from testkit import git
from testkit.idp import IdentityProvider
from tests.integration.test_identity import auth_settings, base_url, bearer, idp

pytestmark = pytest.mark.integration

__all__ = ["auth_settings", "base_url", "idp"]  # fixtures

WAIT = 120.0


class Chat:
    """One person's conversation through `/v1/chat/completions`, replayed each turn."""

    def __init__(self, base_url: str, token: str, repo: Path) -> None:
        self.client = openai.AsyncOpenAI(
            base_url=f"{base_url}/v1",
            api_key=token,
            default_headers={"X-Switchboard-Repo": str(repo)},
            max_retries=0,
        )
        self.history: list[ChatCompletionMessageParam] = []

    async def say(self, words: str) -> str:
        self.history.append({"role": "user", "content": words})
        answer = await self.client.chat.completions.create(
            model="switchboard", messages=self.history
        )
        text = answer.choices[0].message.content or ""
        self.history.append({"role": "assistant", "content": text})
        return text

    async def delegate(self, goal: str) -> str:
        text = await self.say(f"delegate: {goal}")
        assert "started task-" in text, text
        return "task-" + text.split("started task-")[1].split()[0].rstrip(".")


@pytest.fixture
async def chats(base_url: str, idp: IdentityProvider, repo: Path) -> AsyncIterator[dict[str, Chat]]:
    people = {user: Chat(base_url, idp.token(user), repo) for user in ("acme-ann", "acme-abe")}
    people["globex-gus"] = Chat(base_url, idp.token("globex-gus"), repo)
    try:
        yield people
    finally:
        for chat in people.values():
            await chat.client.close()


async def _phase(http: httpx.AsyncClient, task_id: str, token: str) -> str:
    response = await http.get(f"/v1/tasks/{task_id}", headers=bearer(token))
    assert response.status_code == 200, response.text
    phase: str = response.json()["phase"]
    return phase


async def _wait_phase(http: httpx.AsyncClient, task_id: str, token: str, phase: Phase) -> None:
    async with asyncio.timeout(WAIT):
        while (current := await _phase(http, task_id, token)) != phase.value:
            assert current not in {"failed", "cancelled", "rejected"}, current
            await asyncio.sleep(0.2)


async def accepted_updates(env: WorkflowEnvironment, task_id: str) -> list[str]:
    """The names of every update the task's history accepted."""
    history = await env.client.get_workflow_handle(task_id).fetch_history()
    return [
        e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
        for e in history.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]


async def test_decisions_by_words_need_the_role_within_the_tenant(
    chats: dict[str, Chat],
    base_url: str,
    idp: IdentityProvider,
    repo: Path,
    temporal_env: WorkflowEnvironment,
) -> None:
    ann, abe, gus = chats["acme-ann"], chats["acme-abe"], chats["globex-gus"]
    ann_token = idp.token("acme-ann")
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        task_id = await ann.delegate("add a slugify helper")
        await _wait_phase(http, task_id, ann_token, Phase.AWAITING_APPROVAL)

        # The requester may not approve, even her own task: the answer names the role,
        # and nothing reaches the workflow.
        refused = await ann.say("approve it")
        assert "need the role 'approver'" in refused, refused
        assert "approved by" not in refused
        assert wire.Updates.APPROVE not in await accepted_updates(temporal_env, task_id)
        assert await _phase(http, task_id, ann_token) == Phase.AWAITING_APPROVAL.value

        # Another tenant's approver: the task is as absent as one that never existed.
        elsewhere = await gus.say(f"approve {task_id}")
        nothing = await gus.say("approve task-01JX0000000000000000000000")
        assert task_id in elsewhere and "approved by" not in elsewhere
        assert elsewhere.replace(task_id, "X") == nothing.replace(
            "task-01JX0000000000000000000000", "X"
        )
        assert wire.Updates.APPROVE not in await accepted_updates(temporal_env, task_id)

        # A colleague with the approver role approves it by words.
        approved = await abe.say(f"approve {task_id}")
        assert f"{task_id}: approved by acme/acme-abe" in approved, approved
        await _wait_phase(http, task_id, ann_token, Phase.COMPLETED)
    assert await accepted_updates(temporal_env, task_id) == [wire.Updates.APPROVE]
    assert git(repo, "rev-parse", "--verify", f"{wire.BRANCH_PREFIX}{task_id}")


async def test_an_approver_approves_their_own_task_by_words(
    chats: dict[str, Chat], base_url: str, idp: IdentityProvider
) -> None:
    gus = chats["globex-gus"]
    token = idp.token("globex-gus")
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        task_id = await gus.delegate("add a title-case helper")
        await _wait_phase(http, task_id, token, Phase.AWAITING_APPROVAL)
        approved = await gus.say("approve it")
        assert f"{task_id}: approved by globex/globex-gus" in approved, approved
        await _wait_phase(http, task_id, token, Phase.COMPLETED)
