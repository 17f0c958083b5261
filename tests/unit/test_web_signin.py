"""What the web chat learns before it shows anything: how to sign in
(`/v1/auth/config`, public) and who it signed in as (`/v1/me`), through the real app
(TestClient, real token store; Temporal is never asked)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.main import create_app
from switchboard.api_tokens import TokenStore
from switchboard.identity import Role
from switchboard.settings import Settings

NOWHERE = "127.0.0.1:1"


def _client(tmp_path: Path, **update: object) -> TestClient:
    settings = Settings(temporal_address=NOWHERE, data_dir=tmp_path, _env_file=None)
    return TestClient(create_app(settings.model_copy(update=update)))


def test_local_mode_needs_no_sign_in(tmp_path: Path) -> None:
    with _client(tmp_path) as api:
        assert api.get("/v1/auth/config").json() == {
            "mode": "local",
            "sign_in": "none",
            "oidc": None,
        }
        me = api.get("/v1/me").json()
        assert me["owner"] == "local" and me["can"]["submit"] and me["can"]["decide"]


def test_tokens_mode_asks_for_a_token_and_me_reflects_its_roles(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "api-tokens.json")
    ann, _ = store.create(subject="ann", tenant="acme", roles=[Role.REQUESTER], name="Ann")
    abe, _ = store.create(subject="abe", tenant="acme", roles=[Role.APPROVER])
    with _client(tmp_path, auth_mode="tokens") as api:
        assert api.get("/v1/auth/config").json() == {
            "mode": "tokens",
            "sign_in": "token",
            "oidc": None,
        }
        missing = api.get("/v1/me")
        assert missing.status_code == 401 and "no credentials" in missing.json()["detail"]
        # The local-mode name header is no way in.
        assert api.get("/v1/me", headers={"X-Switchboard-User": "ann"}).status_code == 401

        me = api.get("/v1/me", headers={"Authorization": f"Bearer {ann}"}).json()
        assert me["owner"] == "acme/ann" and me["name"] == "Ann" and me["roles"] == ["requester"]
        assert me["can"] == {"submit": True, "decide": False, "see_tenant": False, "admin": False}

        me = api.get("/v1/me", headers={"Authorization": f"Bearer {abe}"}).json()
        assert me["can"]["decide"] and me["can"]["see_tenant"] and not me["can"]["submit"]


def test_oidc_mode_publishes_the_public_client_for_pkce(tmp_path: Path) -> None:
    oidc = {
        "auth_mode": "tokens,oidc",
        "oidc_issuer": "http://127.0.0.1:9/",
        "oidc_audience": "switchboard",
    }
    with _client(tmp_path, **oidc) as api:
        # No web client configured: the page falls back to a pasted token.
        assert api.get("/v1/auth/config").json()["sign_in"] == "token"
    web = {
        "oidc_web_client_id": "switchboard-web",
        "oidc_web_scopes": "openid api",
        "oidc_web_resource": "https://switchboard.test/api",
    }
    with _client(tmp_path, **oidc, **web) as api:
        config = api.get("/v1/auth/config").json()
    assert config["sign_in"] == "oidc"
    assert config["oidc"] == {
        "issuer": "http://127.0.0.1:9/",
        "client_id": "switchboard-web",
        "scopes": "openid api",
        "audience": "switchboard",
        "resource": "https://switchboard.test/api",
    }
