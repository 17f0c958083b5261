"""Tenancy, generated from the API's own OpenAPI document: every operation is tried by
users of two tenants and three roles against real tasks and sessions of one user
(`acme/ann`), over real HTTP with static API tokens, a real worker and Temporal.

- an operation on another tenant's (or, for a plain requester, another user's) task or
  session is 404, never 403, and no answer to a stranger carries the owner's data;
- a user who may see the task but lacks the role is 403 naming the role;
- a user with the role gets past the check (against an ended task, so that nothing
  is decided: the answer is the phase's 409, never 401/403/404);
- listings and event streams show a user only what they may see.

Every `{task_id}` and `{session_id}` operation is tried across tenants whatever the
table says; an operation in the document without a case in `CASES` fails the test, so
a new route cannot ship untried.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from switchboard.api_tokens import TokenStore
from switchboard.identity import Role
from switchboard.models import EventKind
from switchboard.settings import Settings
from testkit import serving
from tests.integration.test_api import read_sse

pytestmark = pytest.mark.integration

SECRET = "zq7-acme-only-goal"
"""In the victim's task goal and session title: no answer to another user may hold it."""

_RUN = uuid.uuid4().hex[:8]
ACME, GLOBEX = f"acme-{_RUN}", f"globex-{_RUN}"
"""Tenants of this run only: the session's dev server holds other tests' tasks too."""
OWNER = f"{ACME}/ann"
ROLES: dict[str, tuple[str, list[Role]]] = {
    "ann": (ACME, [Role.REQUESTER]),  # owns every victim
    "amy": (ACME, [Role.REQUESTER]),  # same tenant, another plain user
    "abe": (ACME, [Role.APPROVER]),
    "ada": (ACME, [Role.TENANT_ADMIN]),
    "gus": (GLOBEX, [Role.TENANT_ADMIN]),  # the most a user of another tenant holds
}
STRANGERS = ("amy", "gus")
"""May not see ann's tasks. (For sessions, everyone but ann is a stranger.)"""

Ok = Literal["ok"]


@dataclass(frozen=True)
class Case:
    kind: Literal["task", "session", "submit", "listing", "chat", "public", "unstored"]
    roles: dict[str, Ok | Role] | None = None
    """Task operations: per user of ann's tenant, allowed or the role named in the 403."""
    body: dict[str, Any] | None = None
    """A valid body where the schema's required fields are not enough."""


Expect = dict[str, Ok | Role]
READ: Expect = {"ann": "ok", "abe": "ok", "ada": "ok"}
DECIDE: Expect = {"ann": Role.APPROVER, "abe": "ok", "ada": "ok"}
OWN_OR_ADMIN: Expect = {"ann": "ok", "abe": Role.TENANT_ADMIN, "ada": "ok"}
ANYONE: Expect = {"ann": "ok", "abe": "ok", "ada": "ok"}
CHAT = {"model": "switchboard", "messages": [{"role": "user", "content": "hello"}]}

CASES: dict[tuple[str, str], Case] = {
    ("GET", "/healthz"): Case("public"),
    ("GET", "/readyz"): Case("public"),
    ("GET", "/v1/models"): Case("public"),
    ("GET", "/v1/models/{model_id}"): Case("public"),
    ("GET", "/v1/auth/config"): Case("public"),
    ("GET", "/v1/me"): Case("public"),  # the caller's own identity only
    ("POST", "/v1/tasks"): Case(
        "submit", {**READ, "abe": Role.REQUESTER}, {"goal": "g", "repo": "/x"}
    ),
    ("GET", "/v1/tasks"): Case("listing"),
    ("GET", "/v1/tasks/{task_id}"): Case("task", READ),
    ("GET", "/v1/tasks/{task_id}/diff"): Case("task", READ),
    ("GET", "/v1/tasks/{task_id}/events"): Case("task", READ),
    ("GET", "/v1/tasks/{task_id}/audit"): Case("task", READ),  # issue 11, another branch
    ("POST", "/v1/tasks/{task_id}/approve"): Case("task", DECIDE),
    ("POST", "/v1/tasks/{task_id}/request-changes"): Case(
        "task",
        DECIDE,
        {"feedback": "tenancy check"},  # optional, but not blank
    ),
    ("POST", "/v1/tasks/{task_id}/reject"): Case("task", DECIDE),
    ("POST", "/v1/tasks/{task_id}/cancel"): Case("task", OWN_OR_ADMIN),
    ("POST", "/v1/tasks/{task_id}/steer"): Case("task", OWN_OR_ADMIN),
    ("POST", "/v1/sessions"): Case("submit", ANYONE),
    ("GET", "/v1/sessions"): Case("listing"),
    ("GET", "/v1/sessions/{session_id}"): Case("session"),
    ("DELETE", "/v1/sessions/{session_id}"): Case("session"),
    ("POST", "/v1/sessions/{session_id}/messages"): Case("session"),
    ("GET", "/v1/sessions/{session_id}/events"): Case("session"),
    ("POST", "/v1/chat/completions"): Case("chat", body=CHAT),
    ("POST", "/v1/responses"): Case("chat", body={"model": "switchboard", "input": "hello"}),
    # Responses are not stored: the owner and a stranger get the same 404.
    ("GET", "/v1/responses/{response_id}"): Case("unstored"),
}


@dataclass
class World:
    http: httpx.AsyncClient
    users: dict[str, dict[str, str]]
    live_task: str
    """ann's task, parked at the approval gate."""
    ended_task: str
    """ann's cancelled task: an allowed decision on it is a 409, nothing changes."""
    live_session: str
    closed_session: str
    schema: dict[str, Any]

    async def call(
        self, user: str, method: str, path: str, body: dict[str, Any] | None, **extra: Any
    ) -> tuple[int, str]:
        """Status and body; an event stream that opens is closed unread (its 200 is all)."""
        request = self.http.build_request(
            method, path, json=body, headers={**self.users[user], **extra}
        )
        response = await self.http.send(request, stream=True)
        try:
            streaming = response.headers.get("content-type", "").startswith("text/event-stream")
            text = "" if streaming else (await response.aread()).decode()
        finally:
            await response.aclose()
        return response.status_code, text


@pytest.fixture
async def world(
    settings: Settings, temporal_env: WorkflowEnvironment, worker: None, repo: Path
) -> AsyncIterator[World]:
    tenanted = settings.model_copy(
        update={
            "temporal_address": temporal_env.client.service_client.config.target_host,
            "auth_mode": "tokens",
        }
    )
    store = TokenStore(tenanted.api_tokens_file)
    users = {}
    for user, (tenant, roles) in ROLES.items():
        token, _ = store.create(subject=user, tenant=tenant, roles=roles)
        users[user] = {"Authorization": f"Bearer {token}"}
    app = create_app(tenanted)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        ann = users["ann"]
        body = {"goal": f"Add a helper {SECRET}", "repo": str(repo), "review": False}
        body["subtasks"] = [{"title": "Helper"}]
        live = (await http.post("/v1/tasks", json=body, headers=ann)).json()["task_id"]
        ended = (await http.post("/v1/tasks", json=body, headers=ann)).json()["task_id"]
        await read_sse(http, f"/v1/tasks/{live}/events", ann, until=EventKind.APPROVAL_NEEDED)
        assert (await http.post(f"/v1/tasks/{ended}/cancel", headers=ann)).status_code == 202
        with pytest.raises(WorkflowFailureError):  # it ends as cancelled
            await temporal_env.client.get_workflow_handle(ended).result()
        sessions = []
        for _ in range(2):
            created = await http.post("/v1/sessions", json={"title": SECRET}, headers=ann)
            sessions.append(created.json()["session_id"])
        assert (await http.delete(f"/v1/sessions/{sessions[1]}", headers=ann)).status_code == 200
        yield World(http, users, live, ended, sessions[0], sessions[1], app.openapi())


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    ]


def _body_from_schema(schema: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any] | None:
    """The smallest body the schema accepts (required fields only)."""
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return None
    node = content["schema"]
    if "anyOf" in node:  # an optional body: `X | None`
        node = next(option for option in node["anyOf"] if "$ref" in option)
    node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    body: dict[str, Any] = {}
    for name in node.get("required", []):
        kind = node["properties"][name].get("type")
        body[name] = {"string": "tenancy check", "boolean": False, "integer": 1}.get(kind, [])
    return body


def _path(template: str, task: str, session: str) -> str:
    path = template.replace("{task_id}", task).replace("{session_id}", session)
    return re.sub(r"\{[a-z_]+\}", "switchboard", path)  # model_id: the public model


async def test_every_operation_keeps_tenants_and_roles_apart(world: World) -> None:
    missing: list[str] = []
    for method, template, operation in _operations(world.schema):
        case = CASES.get((method, template))
        body = (case.body if case else None) or _body_from_schema(world.schema, operation)
        if "{task_id}" in template or "{session_id}" in template:
            await _nobody_else_sees_it(world, method, template, body)
        if case is None:
            missing.append(f"{method} {template}")
        elif case.kind == "task":
            assert case.roles is not None
            await _roles_within_the_tenant(world, method, template, body, case.roles)
        elif case.kind == "session":
            await _owner_gets_past(world, method, template, body)
        elif case.kind == "submit":
            assert case.roles is not None
            await _submit_roles(world, method, template, body, case.roles)
        elif case.kind == "listing":
            await _listing_filters(world, template)
        elif case.kind == "chat":
            await _chat_sessions_are_owned(world, template, body)
        elif case.kind == "unstored":
            await _same_answer_for_everyone(world, template)
        else:
            status, text = await world.call("gus", method, _path(template, "", ""), body)
            assert status == 200, (method, template, status)
            assert SECRET not in text and OWNER not in text and "ann" not in text, text
    assert not missing, f"operations without a tenancy case (add them to CASES): {missing}"
    assert await _phase(world, world.live_task) == "awaiting_approval", "nothing was decided"


async def _nobody_else_sees_it(
    world: World, method: str, template: str, body: dict[str, Any] | None
) -> None:
    """404 for every stranger, on the live and the ended task (or session), and never
    the owner's data in the answer."""
    on_sessions = "{session_id}" in template
    strangers = [u for u in ROLES if u != "ann"] if on_sessions else STRANGERS
    targets = (
        [(world.ended_task, world.live_session), (world.ended_task, world.closed_session)]
        if on_sessions
        else [(world.live_task, ""), (world.ended_task, "")]
    )
    for user in strangers:
        for task, session in targets:
            path = _path(template, task, session)
            status, text = await world.call(user, method, path, body)
            assert status == 404, (user, method, path, status, text)
            assert SECRET not in text and OWNER not in text, (user, method, path, text)


async def _roles_within_the_tenant(
    world: World,
    method: str,
    template: str,
    body: dict[str, Any] | None,
    roles: dict[str, Ok | Role],
) -> None:
    reads = method == "GET"
    for user, expected in roles.items():
        if expected == "ok":
            # Reads on the live task; anything else on the ended one, where it can
            # only be refused for the phase (409), never for who is asking.
            task = world.live_task if reads else world.ended_task
            path = _path(template, task, "")
            status, text = await world.call(user, method, path, body)
            allowed = {200} if reads else {409}
            if template.endswith("/audit"):
                allowed = {200}
            assert status in allowed, (user, method, path, status, text)
        else:
            path = _path(template, world.live_task, "")
            status, text = await world.call(user, method, path, body)
            assert status == 403, (user, method, path, status, text)
            assert f"'{expected}'" in text, (user, method, path, text)


async def _owner_gets_past(
    world: World, method: str, template: str, body: dict[str, Any] | None
) -> None:
    """The owner reads the live session and closes a fresh one; anything else on the
    closed one is the phase's 409."""
    session, expected = world.closed_session, 409
    if method == "GET":
        session, expected = world.live_session, 200
    elif method == "DELETE":
        created = await world.http.post("/v1/sessions", json={}, headers=world.users["ann"])
        session, expected = created.json()["session_id"], 200
    status, text = await world.call("ann", method, _path(template, "", session), body)
    assert status == expected, (method, template, status, text)


async def _submit_roles(
    world: World,
    method: str,
    template: str,
    body: dict[str, Any] | None,
    roles: dict[str, Ok | Role],
) -> None:
    """Creating: the role first; past it, a task to a repository outside the allowed
    roots is a 400 (nothing starts), a session is created for the caller."""
    for user, expected in roles.items():
        status, text = await world.call(user, method, template, body)
        if expected == "ok":
            assert status in (201, 400), (user, template, status, text)
            assert status == 201 or "allowed" in text or "repositor" in text, text
        else:
            assert status == 403 and f"'{expected}'" in text, (user, template, status, text)


async def _listing_filters(world: World, template: str) -> None:
    tasks = template == "/v1/tasks"
    mine = {world.live_task, world.ended_task} if tasks else {world.live_session}
    can_see = ("ann", "abe", "ada") if tasks else ("ann",)
    for user in ROLES:
        status, text = await world.call(user, "GET", template, None)
        assert status == 200, (user, template, status, text)
        key = "task_id" if tasks else "session_id"
        listed = {item[key] for item in httpx.Response(200, text=text).json()["data"]}
        if user in can_see:
            assert mine <= listed, (user, template, listed)
        else:
            assert not mine & listed and SECRET not in text, (user, template, text)


async def _chat_sessions_are_owned(
    world: World, template: str, body: dict[str, Any] | None
) -> None:
    """The OpenAI surface names a session by header or by a previous response id: a
    stranger's (open or closed) is a 404 in OpenAI's error shape; the owner is answered."""
    assert body is not None
    tries = [
        (u, s) for u in ROLES if u != "ann" for s in (world.live_session, world.closed_session)
    ]
    for user, session in [*tries, ("ann", world.live_session)]:
        if template == "/v1/responses":
            sent = {**body, "previous_response_id": f"resp_{session}_0"}
            status, text = await world.call(user, "POST", template, sent)
        else:
            status, text = await world.call(
                user, "POST", template, body, **{"X-Switchboard-Session": session}
            )
        if user == "ann":
            assert status == 200, (template, status, text)
        else:
            assert status == 404, (user, template, session, status, text)
            assert '"error"' in text and SECRET not in text, (user, template, text)


async def _same_answer_for_everyone(world: World, template: str) -> None:
    """A response id of ann's live session: ann and every stranger get the same 404
    (OpenAI's shape), so it tells no one whether the response or session exists."""
    path = template.replace("{response_id}", f"resp_{world.live_session}_0")
    answers = {user: await world.call(user, "GET", path, None) for user in ROLES}
    for user, (status, text) in answers.items():
        assert status == 404, (user, path, status, text)
        assert '"error"' in text and SECRET not in text, (user, text)
    assert len({text for _, text in answers.values()}) == 1, answers


async def _phase(world: World, task_id: str) -> str:
    status = await world.http.get(f"/v1/tasks/{task_id}", headers=world.users["ann"])
    phase: str = status.json()["phase"]
    return phase
