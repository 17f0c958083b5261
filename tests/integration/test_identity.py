"""Identity end to end: a real, certified OpenID Connect provider (`oidc-provider` on
Node, tests/idp) issues JWT access tokens through the client_credentials grant; the API
runs under uvicorn with `auth_mode=tokens,oidc` on the session's Temporal dev server
with a real worker. Nothing is minted by hand except the forged tokens."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import jwt
import openai
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from temporalio.testing import WorkflowEnvironment

from api.main import UnsafeBind, create_app
from entrypoints import _cli_auth
from entrypoints.api_client import ApiError, SessionClient
from switchboard.api_tokens import TokenStore
from switchboard.auth import Authenticator
from switchboard.errors import Unauthenticated
from switchboard.identity import Role
from switchboard.models import EventKind
from switchboard.settings import Settings
from testkit.idp import IdentityProvider
from tests.integration.test_api import read_sse

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdentityProvider]:
    with IdentityProvider(tmp_path_factory.mktemp("idp") / "keys.json") as provider:
        yield provider


@pytest.fixture
def auth_settings(
    settings: Settings, idp: IdentityProvider, temporal_env: WorkflowEnvironment
) -> Settings:
    target = temporal_env.client.service_client.config.target_host
    return settings.model_copy(
        update={
            "temporal_address": target,
            "auth_mode": "tokens,oidc",
            "oidc_issuer": idp.issuer,
            "oidc_audience": "switchboard",
            "oidc_leeway_seconds": 0.0,
            "oidc_jwks_refresh_cooldown_seconds": 1.0,
        }
    )


@pytest.fixture
async def base_url(auth_settings: Settings, worker: None) -> AsyncIterator[str]:
    app = create_app(auth_settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not serving.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await serving
        sock.close()


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _tampered(token: str) -> str:
    """The same signature over a payload that now claims `admin`."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = ["admin"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _self_signed(token: str) -> str:
    """The same claims and kid, signed with a key the provider never published."""
    claims = jwt.decode(token, options={"verify_signature": False})
    kid = jwt.get_unverified_header(token)["kid"]
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


async def test_access_tokens_are_verified(
    http: httpx.AsyncClient, idp: IdentityProvider, auth_settings: Settings
) -> None:
    valid = idp.token("acme-ann")
    assert (await http.get("/v1/tasks", headers=bearer(valid))).status_code == 200

    missing = await http.get("/v1/tasks", headers={"X-Switchboard-User": "acme-ann"})
    assert missing.status_code == 401, missing.text
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "no credentials" in missing.json()["detail"]

    wrong_audience = idp.token("acme-ann", "https://other.test/api")
    response = await http.get("/v1/tasks", headers=bearer(wrong_audience))
    assert response.status_code == 401 and "audience" in response.json()["detail"].lower()

    for forged in (_tampered(valid), _self_signed(valid)):
        response = await http.get("/v1/tasks", headers=bearer(forged))
        assert response.status_code == 401 and "signature" in response.json()["detail"].lower()

    short = idp.token("acme-ann", "https://switchboard.test/short")
    await asyncio.sleep(2.1)
    response = await http.get("/v1/tasks", headers=bearer(short))
    assert response.status_code == 401 and "expired" in response.json()["detail"].lower()

    # The provider's genuine token, but this API trusts another issuer.
    elsewhere = auth_settings.model_copy(
        update={
            "oidc_issuer": "http://127.0.0.1:1/not-this-one",
            "oidc_jwks_url": f"{idp.issuer}/jwks",
        }
    )
    with pytest.raises(Unauthenticated, match="issuer"):
        await Authenticator(elsewhere).identify(f"Bearer {valid}", None)


async def test_a_rotated_signing_key_is_fetched_on_first_use(
    http: httpx.AsyncClient, idp: IdentityProvider
) -> None:
    before = idp.token("acme-ann")
    assert (await http.get("/v1/tasks", headers=bearer(before))).status_code == 200
    idp.restart(rotate=True)
    after = idp.token("acme-ann")
    old_kid = jwt.get_unverified_header(before)["kid"]
    assert jwt.get_unverified_header(after)["kid"] != old_kid
    await asyncio.sleep(1.1)  # the refetch cooldown (tokens with made-up kids wait it out)
    assert (await http.get("/v1/tasks", headers=bearer(after))).status_code == 200
    assert (await http.get("/v1/tasks", headers=bearer(before))).status_code == 200


async def test_tenants_and_roles(
    http: httpx.AsyncClient, idp: IdentityProvider, repo: Path
) -> None:
    ann, abe, gus = (bearer(idp.token(user)) for user in ("acme-ann", "acme-abe", "globex-gus"))
    body = {"goal": "Add a helper", "repo": str(repo), "subtasks": [{"title": "Helper"}]}
    created = await http.post("/v1/tasks", json={**body, "review": False}, headers=ann)
    assert created.status_code == 201, created.text
    task_id = created.json()["task_id"]
    await read_sse(http, f"/v1/tasks/{task_id}/events", ann, until=EventKind.APPROVAL_NEEDED)

    # Another tenant: the task does not exist, whatever is asked.
    for method, path in [
        ("GET", ""),
        ("GET", "/diff"),
        ("GET", "/events"),
        ("POST", "/approve"),
        ("POST", "/reject"),
        ("POST", "/cancel"),
    ]:
        response = await http.request(method, f"/v1/tasks/{task_id}{path}", headers=gus)
        assert response.status_code == 404, (method, path, response.text)
    assert task_id not in {
        t["task_id"] for t in (await http.get("/v1/tasks", headers=gus)).json()["data"]
    }

    # The same tenant: the approver sees it and may decide, not cancel; the requester
    # may not approve their own task.
    listed = (await http.get("/v1/tasks", headers=abe)).json()["data"]
    assert task_id in {t["task_id"] for t in listed}
    refused = await http.post(f"/v1/tasks/{task_id}/approve", headers=ann)
    assert refused.status_code == 403 and "'approver'" in refused.json()["detail"]
    not_theirs = await http.post(f"/v1/tasks/{task_id}/cancel", headers=abe)
    assert not_theirs.status_code == 403 and "'tenant-admin'" in not_theirs.json()["detail"]
    claimed = await http.post(
        f"/v1/tasks/{task_id}/approve", json={"comment": "ok", "by": "someone-else"}, headers=abe
    )
    assert claimed.status_code == 422, "the approver is never taken from the body"
    approved = await http.post(f"/v1/tasks/{task_id}/approve", json={"comment": "ok"}, headers=abe)
    assert approved.status_code == 200, approved.text
    assert approved.json()["by"] == "acme/acme-abe"


async def test_static_tokens_work_until_revoked(
    http: httpx.AsyncClient, auth_settings: Settings
) -> None:
    store = TokenStore(auth_settings.api_tokens_file)
    token, record = store.create(subject="ci-bot", tenant="acme", roles=[Role.REQUESTER])
    assert auth_settings.api_tokens_file.stat().st_mode & 0o777 == 0o600
    assert token not in auth_settings.api_tokens_file.read_text()
    assert (await http.get("/v1/tasks", headers=bearer(token))).status_code == 200
    assert store.revoke(record.id)
    response = await http.get("/v1/tasks", headers=bearer(token))
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


async def test_the_openai_client_uses_its_api_key_as_the_token(
    base_url: str, idp: IdentityProvider, repo: Path
) -> None:
    def client(api_key: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{base_url}/v1",
            api_key=api_key,
            default_headers={"X-Switchboard-Repo": str(repo)},
            max_retries=0,
        )

    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "hello there"}
    ]
    signed_in = client(idp.token("acme-ann"))
    answer = await signed_in.chat.completions.create(model="switchboard", messages=messages)
    assert (answer.choices[0].message.content or "").endswith("You said: hello there")

    assert [m.id async for m in signed_in.models.list()]
    stranger = client("not-a-token")
    with pytest.raises(openai.AuthenticationError):
        await stranger.models.list()
    with pytest.raises(openai.AuthenticationError) as refused:
        await stranger.chat.completions.create(model="switchboard", messages=messages)
    assert refused.value.status_code == 401
    assert isinstance(refused.value.body, dict) and refused.value.body["code"] == "invalid_api_key"
    await signed_in.close()
    await stranger.close()


def test_local_mode_refuses_to_listen_beyond_loopback(settings: Settings) -> None:
    with pytest.raises(UnsafeBind, match="SWITCHBOARD_AUTH_MODE"):
        create_app(settings.model_copy(update={"api_host": "0.0.0.0"}))


async def test_the_terminal_chat_client_sends_the_stored_token(
    base_url: str, idp: IdentityProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("SWITCHBOARD_TOKEN", raising=False)
    async with SessionClient(base_url, "acme-ann") as anonymous:
        with pytest.raises(ApiError, match="switchboard login") as refused:
            await anonymous.create_session(title="t")
        assert refused.value.status == 401
    stored = _cli_auth.stored_token_path()
    stored.parent.mkdir(parents=True)
    stored.write_text(idp.token("acme-ann") + "\n")
    async with SessionClient(base_url, "ignored") as signed_in:
        info = await signed_in.create_session(title="t")
    assert info.owner == "acme/acme-ann"
