"""Static API tokens: created, listed and revoked by `switchboard token`, checked by the API.

A token is `sb_<id>_<secret>` with a 256-bit secret; the file keeps only its sha256
digest (high-entropy input, so a plain digest is enough), the identity it stands for,
and when it was made. The file is JSON, mode 0600, rewritten atomically; the API
rereads it when it changes, so a revocation takes effect on the next request.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from pydantic import Field

from switchboard.errors import InvalidRequest
from switchboard.identity import TENANT_PATTERN, Identity, Role
from switchboard.models import Model

__all__ = ["TOKEN_PREFIX", "TokenRecord", "TokenStore"]

TOKEN_PREFIX = "sb_"


class TokenRecord(Model):
    id: str = Field(pattern=r"^[a-z0-9]{8}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    subject: str = Field(pattern=r"^[A-Za-z0-9._@+-]{1,128}$")
    name: str = Field(default="", max_length=200)
    tenant: str = Field(pattern=TENANT_PATTERN)
    roles: list[Role]
    created: datetime

    def identity(self) -> Identity:
        return Identity(
            subject=self.subject,
            name=self.name or self.subject,
            tenant=self.tenant,
            roles=frozenset(self.roles),
            via="token",
        )


class _TokenFile(Model):
    tokens: list[TokenRecord] = Field(default_factory=list)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """The token file at `path` (created 0600 on first write)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._by_digest: dict[str, TokenRecord] = {}

    def create(
        self, *, subject: str, tenant: str, roles: list[Role], name: str = ""
    ) -> tuple[str, TokenRecord]:
        """A new token (shown once, never stored) and its record."""
        if not roles:
            raise InvalidRequest("a token needs at least one role (--role requester)")
        token_id = secrets.token_hex(4)
        token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        record = TokenRecord(
            id=token_id,
            sha256=_digest(token),
            subject=subject,
            name=name,
            tenant=tenant,
            roles=sorted(set(roles)),
            created=datetime.now(UTC),
        )
        self._write([*self.records(), record])
        return token, record

    def records(self) -> list[TokenRecord]:
        if not self.path.exists():
            return []
        return _TokenFile.model_validate_json(self.path.read_text()).tokens

    def revoke(self, token_id: str) -> bool:
        """Remove the token with this id; False when there was none."""
        records = self.records()
        kept = [record for record in records if record.id != token_id]
        if len(kept) == len(records):
            return False
        self._write(kept)
        return True

    def lookup(self, token: str) -> Identity | None:
        """The identity of a presented token, or None (unknown or revoked)."""
        self._reload_if_changed()
        record = self._by_digest.get(_digest(token))
        return record.identity() if record else None

    def _reload_if_changed(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._by_digest = None, {}
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._by_digest = {record.sha256: record for record in self.records()}
            self._stamp = stamp

    def _write(self, records: list[TokenRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps(_TokenFile(tokens=records).model_dump(mode="json"), indent=2)
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".tokens-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(body)
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
