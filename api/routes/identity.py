"""`/v1/auth/config` and `/v1/me`: how the web chat signs in, and who it signed in as.

The config is public (nothing in it is a secret: an OIDC client id and scopes are in
every authorization URL anyway); `/v1/me` needs the same credentials as any call.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter

from api.deps import AppSettings, CurrentIdentity
from api.openapi import ErrorBody
from switchboard.identity import Identity, Role
from switchboard.models import Model
from switchboard.settings import Settings

__all__ = ["AuthConfig", "Me", "OidcClientConfig", "Permissions", "router"]

router = APIRouter(prefix="/v1", tags=["identity"])


class OidcClientConfig(Model):
    """What a browser needs for authorization code + PKCE with the issuer."""

    issuer: str
    client_id: str
    scopes: str
    audience: str
    resource: str | None = None


class AuthConfig(Model):
    """How to sign in: `none` (local mode), `token` (paste an API token) or `oidc`."""

    mode: str
    sign_in: Literal["none", "token", "oidc"]
    oidc: OidcClientConfig | None = None


class Permissions(Model):
    """What the caller may do, so a page shows only the controls that will work (the
    API checks every call again regardless)."""

    submit: bool
    """Delegate tasks, chat, steer and cancel their own tasks."""
    decide: bool
    """Approve, request changes, reject within their tenant."""
    see_tenant: bool
    """See the tenant's tasks, not only their own."""
    admin: bool


class Me(Model):
    subject: str
    name: str
    tenant: str
    roles: list[Role]
    via: Literal["local", "token", "oidc"]
    owner: str
    can: Permissions


def auth_config_of(settings: Settings) -> AuthConfig:
    if settings.auth_is_local:
        return AuthConfig(mode=settings.auth_mode, sign_in="none")
    if "oidc" in settings.auth_modes and settings.oidc_web_client_id:
        assert settings.oidc_issuer and settings.oidc_audience  # Settings checks this
        oidc = OidcClientConfig(
            issuer=settings.oidc_issuer,
            client_id=settings.oidc_web_client_id,
            scopes=settings.oidc_web_scopes,
            audience=settings.oidc_audience,
            resource=settings.oidc_web_resource,
        )
        return AuthConfig(mode=settings.auth_mode, sign_in="oidc", oidc=oidc)
    return AuthConfig(mode=settings.auth_mode, sign_in="token")


def me_of(identity: Identity) -> Me:
    return Me(
        subject=identity.subject,
        name=identity.name or identity.subject,
        tenant=identity.tenant,
        roles=sorted(identity.roles),
        via=identity.via,
        owner=identity.owner,
        can=Permissions(
            submit=identity.has(Role.REQUESTER),
            decide=identity.has(Role.APPROVER),
            see_tenant=identity.has(Role.APPROVER),
            admin=identity.has(Role.ADMIN),
        ),
    )


@router.get("/auth/config")
async def auth_config(settings: AppSettings) -> AuthConfig:
    """How a client signs in here (public: no credentials needed)."""
    return auth_config_of(settings)


_UNAUTHENTICATED: dict[int | str, dict[str, Any]] = {
    401: {"description": "No credentials, or ones that do not verify.", "model": ErrorBody},
}


@router.get("/me", responses=_UNAUTHENTICATED)
async def me(caller: CurrentIdentity) -> Me:
    """The verified caller and what their roles let them do."""
    return me_of(caller)
