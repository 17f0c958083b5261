"""The identity rules, the token file and the `token`/`login` commands, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from entrypoints import _cli_auth
from entrypoints.cli import app
from switchboard.api_tokens import TokenStore
from switchboard.auth import Authenticator
from switchboard.errors import Forbidden, Unauthenticated
from switchboard.identity import Action, Identity, Role, local_identity
from switchboard.settings import Settings


def who(subject: str, tenant: str, *roles: Role) -> Identity:
    return Identity(subject=subject, tenant=tenant, roles=frozenset(roles), via="oidc")


ANN = who("ann", "acme", Role.REQUESTER)
ABE = who("abe", "acme", Role.APPROVER)
ADA = who("ada", "acme", Role.TENANT_ADMIN)
GUS = who("gus", "globex", Role.REQUESTER, Role.APPROVER)
ROOT = who("root", "ops", Role.ADMIN)


def test_who_sees_a_task() -> None:
    owner = ANN.owner
    assert owner == "acme/ann"
    assert [i.can_see(owner) for i in (ANN, ABE, ADA, GUS, ROOT)] == [
        True,
        True,
        True,
        False,
        True,
    ]
    assert not who("bob", "acme", Role.REQUESTER).can_see(owner)


@pytest.mark.parametrize(
    ("caller", "action", "needed"),
    [
        (ANN, Action.DECIDE, "'approver'"),
        (ABE, Action.CANCEL, "'tenant-admin'"),
        (ABE, Action.STEER, "'tenant-admin'"),
    ],
)
def test_a_missing_role_is_named(caller: Identity, action: Action, needed: str) -> None:
    with pytest.raises(Forbidden, match=needed):
        caller.require(action, ANN.owner)


def test_roles_that_suffice() -> None:
    for caller, action in [
        (ANN, Action.STEER),
        (ANN, Action.CANCEL),
        (ABE, Action.DECIDE),
        (ADA, Action.CANCEL),
        (ADA, Action.DECIDE),
        (ROOT, Action.CANCEL),
    ]:
        caller.require(action, ANN.owner)
    assert ANN.list_scope() == ("acme/ann", None)
    assert ABE.list_scope() == (None, "acme")
    assert ROOT.list_scope() == (None, None)


def test_local_names_are_their_own_tenants() -> None:
    alice, bob = local_identity("alice"), local_identity("bob@example")
    assert alice.owner == "alice" and not bob.can_see(alice.owner)
    alice.require(Action.DECIDE, alice.owner)


async def test_tokens_verify_until_revoked(tmp_path: Path) -> None:
    settings = Settings(auth_mode="tokens", data_dir=tmp_path, _env_file=None)
    store = TokenStore(settings.api_tokens_file)
    token, record = store.create(subject="bot", tenant="acme", roles=[Role.APPROVER])
    authenticator = Authenticator(settings)
    identity = await authenticator.identify(f"Bearer {token}", "someone-else")
    assert (identity.owner, identity.roles) == ("acme/bot", frozenset({Role.APPROVER}))
    for header, message in [
        (None, "no credentials"),
        (f"Basic {token}", "Bearer"),
        (f"Bearer {token}x", "unknown or revoked"),
    ]:
        with pytest.raises(Unauthenticated, match=message):
            await authenticator.identify(header, "alice")
    assert store.revoke(record.id) and not store.revoke(record.id)
    with pytest.raises(Unauthenticated, match="revoked"):
        await authenticator.identify(f"Bearer {token}", None)


@pytest.mark.parametrize("algorithms", [["HS256"], ["none"], ["RS256", "HS512"]])
def test_symmetric_or_no_signature_is_refused(algorithms: list[str]) -> None:
    with pytest.raises(ValidationError, match="OIDC_ALGORITHMS"):
        Settings(oidc_algorithms=algorithms, _env_file=None)


def test_oidc_needs_issuer_and_audience() -> None:
    with pytest.raises(ValidationError, match="OIDC_ISSUER"):
        Settings(auth_mode="oidc", _env_file=None)


def test_token_commands_and_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("SWITCHBOARD_TOKEN", raising=False)
    runner = CliRunner()
    created = runner.invoke(
        app, ["token", "create", "ci", "--tenant", "acme", "--role", "approver"]
    )
    assert created.exit_code == 0, created.output
    token = created.output.strip().splitlines()[-1]
    assert token.startswith("sb_")
    listed = runner.invoke(app, ["token", "list"])
    token_id = token.split("_")[1]
    assert f"{token_id}\tacme/ci\tapprover" in listed.output and token not in listed.output

    assert _cli_auth.resolve_token() is None
    assert runner.invoke(app, ["login", "--token", token]).exit_code == 0
    assert _cli_auth.stored_token_path().stat().st_mode & 0o777 == 0o600
    assert _cli_auth.resolve_token() == token
    monkeypatch.setenv("SWITCHBOARD_TOKEN", "from-env")
    assert _cli_auth.resolve_token() == "from-env"
    assert _cli_auth.resolve_token("explicit") == "explicit"

    assert runner.invoke(app, ["token", "revoke", token_id]).exit_code == 0
    again = runner.invoke(app, ["token", "revoke", token_id])
    assert again.exit_code == 1


def test_up_says_whether_auth_is_on(tmp_path: Path) -> None:
    from entrypoints.stack import Stack

    local = dict(Stack(settings=Settings(data_dir=tmp_path, _env_file=None)).describe())
    assert local["Auth"].startswith("OFF: local mode")
    tokens = Settings(auth_mode="tokens", data_dir=tmp_path, _env_file=None)
    assert dict(Stack(settings=tokens).describe())["Auth"] == "tokens (bearer tokens required)"


PROXY_SECRET = "a-long-shared-proxy-secret"


async def test_forwarded_users_count_only_with_the_proxy_secret(tmp_path: Path) -> None:
    settings = Settings(
        auth_mode="proxy,tokens",
        proxy_secret=PROXY_SECRET,
        proxy_default_tenant="acme",
        data_dir=tmp_path,
        _env_file=None,
    )
    store = TokenStore(settings.api_tokens_file)
    token, _ = store.create(subject="bot", tenant="acme", roles=[Role.REQUESTER])
    authenticator = Authenticator(settings)
    forwarded = {"X-Forwarded-User": "mallory", "X-Forwarded-Roles": "admin"}

    # Without the secret the forwarded headers are ignored: the token decides.
    identity = await authenticator.identify(f"Bearer {token}", None, forwarded)
    assert (identity.owner, identity.via) == ("acme/bot", "token")
    with pytest.raises(Unauthenticated, match="no credentials"):
        await authenticator.identify(None, None, forwarded)
    with pytest.raises(Unauthenticated, match="does not match"):
        await authenticator.identify(
            f"Bearer {token}", None, {**forwarded, "X-Switchboard-Proxy-Secret": "guess"}
        )

    proxied = {
        "X-Switchboard-Proxy-Secret": PROXY_SECRET,
        "X-Forwarded-User": "ann",
        "X-Forwarded-Email": "ann@acme.test",
        "X-Forwarded-Tenant": "acme-eu",
        "X-Forwarded-Roles": "requester, approver bogus",
    }
    ann = await authenticator.identify(None, None, proxied)
    assert (ann.owner, ann.name, ann.via) == ("acme-eu/ann", "ann@acme.test", "proxy")
    assert ann.roles == frozenset({Role.REQUESTER, Role.APPROVER})
    plain = {"X-Switchboard-Proxy-Secret": PROXY_SECRET, "X-Forwarded-User": "bo"}
    bo = await authenticator.identify(None, None, plain)
    assert (bo.owner, bo.roles) == ("acme/bo", frozenset({Role.REQUESTER}))
    for bad in ({"X-Forwarded-User": ""}, {"X-Forwarded-User": "a/b"}):
        with pytest.raises(Unauthenticated, match="X-Forwarded-User"):
            await authenticator.identify(None, None, {**plain, **bad})

    only_proxy = Authenticator(settings.model_copy(update={"auth_mode": "proxy"}))
    with pytest.raises(Unauthenticated, match="trusted proxy"):
        await only_proxy.identify(f"Bearer {token}", None, forwarded)
    no_tenant = settings.model_copy(update={"proxy_default_tenant": None})
    with pytest.raises(Unauthenticated, match="X-Forwarded-Tenant"):
        await Authenticator(no_tenant).identify(None, None, plain)


def test_proxy_mode_needs_a_secret() -> None:
    with pytest.raises(ValidationError, match="PROXY_SECRET"):
        Settings(auth_mode="proxy", _env_file=None)
    with pytest.raises(ValidationError, match="PROXY_SECRET"):
        Settings(auth_mode="tokens,proxy", proxy_secret="short", _env_file=None)
    with pytest.raises(ValidationError):
        Settings(auth_mode="local,proxy", proxy_secret=PROXY_SECRET, _env_file=None)
