"""Turning a request's credentials into an `Identity`: `Authenticator`.

OIDC access tokens are verified with PyJWT (signature against the issuer's JWKS via
`PyJWKClient`, then `iss`, `aud`, `exp`/`nbf`/`iat` with leeway). An unknown `kid`
refetches the key set once, so a rotated key works on its first use. Nothing here is
hand-written crypto.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from typing import Any

import httpx
import jwt
from jwt import PyJWKClient

from switchboard.api_tokens import TOKEN_PREFIX, TokenStore
from switchboard.errors import ServiceUnavailable, Unauthenticated
from switchboard.identity import TENANT_PATTERN, Identity, Role, local_identity
from switchboard.settings import Settings

__all__ = ["DEFAULT_LOCAL_USER", "Authenticator", "OidcVerifier"]

log = logging.getLogger(__name__)

DEFAULT_LOCAL_USER = "local"
_FETCH_TIMEOUT = 10.0


class OidcVerifier:
    """Verifies one issuer's JWT access tokens."""

    def __init__(self, settings: Settings) -> None:
        assert settings.oidc_issuer and settings.oidc_audience  # Settings checks this
        self._settings = settings
        self._issuer = settings.oidc_issuer
        self._audience = settings.oidc_audience
        self._jwks: PyJWKClient | None = None
        self._lock = threading.Lock()

    async def verify(self, token: str) -> Identity:
        return await asyncio.to_thread(self.verify_sync, token)

    def verify_sync(self, token: str) -> Identity:
        try:
            key = self._client().get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=self._settings.oidc_algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._settings.oidc_leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWKClientConnectionError as exc:
            message = f"the identity provider's keys cannot be fetched: {exc}"
            raise ServiceUnavailable(message) from exc
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the access token has expired: sign in again") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the access token does not verify: {exc}") from exc
        return self._identity(claims)

    def _identity(self, claims: dict[str, Any]) -> Identity:
        settings = self._settings
        tenant = claims.get(settings.oidc_tenant_claim) or settings.oidc_default_tenant
        if not isinstance(tenant, str) or not _fits(tenant, TENANT_PATTERN):
            raise Unauthenticated(
                f"the access token has no usable '{settings.oidc_tenant_claim}' claim "
                "(the tenant): ask your identity provider's administrator"
            )
        raw_roles = claims.get(settings.oidc_roles_claim, settings.oidc_default_roles)
        if isinstance(raw_roles, str):
            raw_roles = raw_roles.split()
        known = {role.value for role in Role}
        roles = frozenset(Role(r) for r in raw_roles if isinstance(r, str) and r in known)
        subject = str(claims["sub"])
        name = claims.get(settings.oidc_name_claim) or claims.get("preferred_username") or subject
        return Identity(
            subject=subject[:128], name=str(name)[:200], tenant=tenant, roles=roles, via="oidc"
        )

    def _client(self) -> PyJWKClient:
        with self._lock:
            if self._jwks is None:
                url = self._settings.oidc_jwks_url or self._discover_jwks_url()
                self._jwks = PyJWKClient(
                    url,
                    cache_keys=True,
                    lifespan=max(self._settings.oidc_jwks_cache_seconds, 1),
                    timeout=int(_FETCH_TIMEOUT),
                    cooldown_duration=self._settings.oidc_jwks_refresh_cooldown_seconds,
                )
            return self._jwks

    def _discover_jwks_url(self) -> str:
        url = self._issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            response = httpx.get(url, timeout=_FETCH_TIMEOUT)
            response.raise_for_status()
            jwks_uri = response.json()["jwks_uri"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            message = f"the identity provider at {url} cannot be read: {exc}"
            raise ServiceUnavailable(message) from exc
        if not isinstance(jwks_uri, str):
            raise ServiceUnavailable(f"{url} names no jwks_uri")
        return jwks_uri


class Authenticator:
    """The one place that decides who a request is (see `switchboard.identity`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        modes = settings.auth_modes
        self.tokens = TokenStore(settings.api_tokens_file) if "tokens" in modes else None
        self.oidc = OidcVerifier(settings) if "oidc" in modes else None

    @property
    def local(self) -> bool:
        return self.settings.auth_is_local

    async def identify(self, authorization: str | None, declared_user: str | None) -> Identity:
        """The caller, from `Authorization: Bearer ...` (or, in local mode, the name header).

        Raises:
            Unauthenticated: No token, or one that does not verify (the message says which).
            ServiceUnavailable: The identity provider cannot be reached.
        """
        if self.local:
            return local_identity(declared_user or DEFAULT_LOCAL_USER)
        token = _bearer(authorization)
        if self.tokens is not None and token.startswith(TOKEN_PREFIX):
            identity = self.tokens.lookup(token)
            if identity is None:
                raise Unauthenticated("the API token is unknown or revoked")
            return identity
        if self.oidc is not None:
            return await self.oidc.verify(token)
        raise Unauthenticated("the API token is unknown or revoked")


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated(
            "no credentials: send 'Authorization: Bearer <token>' (switchboard login, "
            "or an API token from 'switchboard token create')"
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def _fits(value: str, pattern: str) -> bool:
    return re.fullmatch(pattern, value) is not None
