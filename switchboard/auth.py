"""Turning a request's credentials into an `Identity`: `Authenticator`.

OIDC access tokens are verified with PyJWT (signature against the issuer's JWKS via
`PyJWKClient`, then `iss`, `aud`, `exp`/`nbf`/`iat` with leeway). An unknown `kid`
refetches the key set once, so a rotated key works on its first use. Nothing here is
hand-written crypto.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import threading
from collections.abc import Mapping
from typing import Any

import httpx
import jwt
from jwt import PyJWKClient

from switchboard.api_tokens import TOKEN_PREFIX, TokenStore
from switchboard.errors import ServiceUnavailable, Unauthenticated
from switchboard.identity import TENANT_PATTERN, Identity, Role, local_identity
from switchboard.settings import Settings

__all__ = ["DEFAULT_LOCAL_USER", "Authenticator", "OidcVerifier", "proxy_identity"]

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

    async def identify(
        self,
        authorization: str | None,
        declared_user: str | None,
        headers: Mapping[str, str] | None = None,
    ) -> Identity:
        """The caller, from `Authorization: Bearer ...` (in local mode, the name header;
        in proxy mode, the forwarded user headers of a request with the proxy secret).

        Raises:
            Unauthenticated: No token, or one that does not verify (the message says which).
            ServiceUnavailable: The identity provider cannot be reached.
        """
        if self.local:
            return local_identity(declared_user or DEFAULT_LOCAL_USER)
        if "proxy" in self.settings.auth_modes and headers is not None:
            proxied = proxy_identity(self.settings, headers)
            if proxied is not None:
                return proxied
            if self.tokens is None and self.oidc is None:
                raise Unauthenticated(
                    f"no proxy credentials: requests must come through the trusted proxy "
                    f"(it sends {self.settings.proxy_secret_header})"
                )
        token = _bearer(authorization)
        if self.tokens is not None and token.startswith(TOKEN_PREFIX):
            identity = self.tokens.lookup(token)
            if identity is None:
                raise Unauthenticated("the API token is unknown or revoked")
            return identity
        if self.oidc is not None:
            return await self.oidc.verify(token)
        raise Unauthenticated("the API token is unknown or revoked")


def proxy_identity(settings: Settings, headers: Mapping[str, str]) -> Identity | None:
    """The user a trusted proxy forwards, or None when the request has no proxy secret
    (its forwarded headers are then ignored: anyone can send them).

    The secret is compared in constant time. With the right secret, the user header is
    required; the tenant comes from its header or `proxy_default_tenant`, the roles
    from theirs (unknown names dropped) or `proxy_default_roles`.

    Raises:
        Unauthenticated: A wrong secret, or a forwarded user that cannot be used.
    """
    sent = headers.get(settings.proxy_secret_header)
    if sent is None or settings.proxy_secret is None:
        return None
    expected = settings.proxy_secret.get_secret_value().encode()
    if not hmac.compare_digest(sent.encode(), expected):
        raise Unauthenticated(f"the {settings.proxy_secret_header} header does not match")
    subject = (headers.get(settings.proxy_user_header) or "").strip()
    if not subject or not _fits(subject, TENANT_PATTERN):
        raise Unauthenticated(
            f"the trusted proxy sent no usable {settings.proxy_user_header} "
            "(1-200 letters, digits and ._@+-)"
        )
    tenant = (headers.get(settings.proxy_tenant_header) or "").strip()
    tenant = tenant or settings.proxy_default_tenant or ""
    if not _fits(tenant, TENANT_PATTERN):
        raise Unauthenticated(
            f"the trusted proxy sent no usable {settings.proxy_tenant_header} and no "
            "default tenant is configured (SWITCHBOARD_PROXY_DEFAULT_TENANT)"
        )
    raw_roles = headers.get(settings.proxy_roles_header)
    names = raw_roles.replace(",", " ").split() if raw_roles else settings.proxy_default_roles
    known = {role.value for role in Role}
    roles = frozenset(Role(name) for name in names if name in known)
    name = (headers.get(settings.proxy_email_header) or subject).strip()
    return Identity(subject=subject[:128], name=name[:200], tenant=tenant, roles=roles, via="proxy")


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
