"""Who is asking: a verified `Identity` (subject, name, tenant, roles) and what it may do.

Four ways to learn it, chosen by `Settings.auth_mode` (`tokens`, `oidc` and `proxy`
combine):

- `local`: no verification. One machine, loopback only; the caller's name comes from
  the `X-Switchboard-User` header (default `local`), every name is its own tenant and
  holds `requester` and `approver`. The API refuses to listen beyond loopback like this.
- `tokens`: static API tokens (`switchboard token create`), stored as sha256 digests
  in a 0600 file under the data directory (`api_tokens.TokenStore`).
- `oidc`: JWT access tokens verified against the issuer's JWKS (`oidc.OidcVerifier`).
- `proxy`: a trusted proxy (or chat frontend) forwards the user in headers, honoured
  only on a request carrying the configured shared secret (`auth.proxy_identity`).

A task's owner key is `tenant/subject` for verified callers (a subject is unique only
within its issuer or token file) and the bare name in local mode; `tenant_of` reads the
tenant back from it, so everything that stores an owner also stores its tenant.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from switchboard.errors import Forbidden

__all__ = [
    "LOCAL_ROLES",
    "TENANT_PATTERN",
    "Action",
    "CancelInput",
    "Claimed",
    "Identity",
    "Role",
    "TaskPolicy",
    "four_eyes_refusal",
    "local_identity",
    "tenant_of",
]

TENANT_PATTERN = r"^[A-Za-z0-9._@+-]{1,200}$"
"""A tenant never holds `/`: the owner key `tenant/subject` splits at the first one."""


class Role(StrEnum):
    REQUESTER = "requester"
    """Submit, chat, steer and cancel one's own tasks."""
    APPROVER = "approver"
    """See the tenant's tasks; approve, request changes, reject within the tenant."""
    TENANT_ADMIN = "tenant-admin"
    """Everything within the tenant."""
    ADMIN = "admin"
    """Everything, every tenant."""


LOCAL_ROLES = frozenset({Role.REQUESTER, Role.APPROVER})


class Action(StrEnum):
    """What a caller does to a task, and the role each needs (see `Identity.require`)."""

    READ = "read"
    SUBMIT = "submit"
    STEER = "steer"
    CANCEL = "cancel"
    DECIDE = "decide"
    """Approve, request changes, or reject."""


class Identity(BaseModel):
    """A caller, as verified (or, in local mode, as declared).

    Also the identity claim every decision, steer and cancel carries into the task's
    workflow (`actor`), filled by the service from the verified caller, never from a
    request body; the workflow's validators check it against the task's `TaskPolicy`.
    (A plain `BaseModel`: `switchboard.models` embeds it, so this module cannot import
    that one.)"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str = Field(min_length=1, max_length=128)
    name: str = Field(default="", max_length=200)
    tenant: str = Field(pattern=TENANT_PATTERN)
    roles: frozenset[Role] = frozenset()
    via: Literal["local", "token", "oidc", "proxy"]

    @property
    def owner(self) -> str:
        """The key tasks and sessions are stored under."""
        return self.subject if self.via == "local" else f"{self.tenant}/{self.subject}"

    def has(self, role: Role) -> bool:
        """Holds `role`, directly or through a wider one."""
        if Role.ADMIN in self.roles:
            return True
        if Role.TENANT_ADMIN in self.roles:
            return role != Role.ADMIN
        return role in self.roles

    def can_see(self, owner: str) -> bool:
        """May know that a task owned by `owner` exists (else it is a 404)."""
        if owner == self.owner or Role.ADMIN in self.roles:
            return True
        return tenant_of(owner) == self.tenant and self.has(Role.APPROVER)

    def require(self, action: Action, owner: str) -> None:
        """Raise `Forbidden` naming the role `action` on `owner`'s task needs.

        Call after `can_see` (an invisible task is a 404, never a 403)."""
        if action == Action.READ:
            return
        if action == Action.DECIDE:
            if not self.has(Role.APPROVER):
                raise Forbidden(
                    "approving, requesting changes and rejecting need the role "
                    f"'{Role.APPROVER}' (or '{Role.TENANT_ADMIN}'); you hold {self._held()}"
                )
            return
        own = owner == self.owner
        if own and self.has(Role.REQUESTER):
            return
        if not own and self.has(Role.TENANT_ADMIN):
            return
        needed = Role.REQUESTER if own else Role.TENANT_ADMIN
        raise Forbidden(f"{action.value} needs the role '{needed}'; you hold {self._held()}")

    def list_scope(self) -> tuple[str | None, str | None]:
        """`(owner, tenant)` filters for a listing: `(None, None)` sees everything."""
        if Role.ADMIN in self.roles:
            return None, None
        if self.has(Role.APPROVER):
            return None, self.tenant
        return self.owner, None

    def _held(self) -> str:
        return ", ".join(sorted(f"'{role}'" for role in self.roles)) or "no role"


class TaskPolicy(BaseModel):
    """Who may decide a task, fixed when it is submitted (part of the workflow input).

    Set by the service from the verified submitter; whatever a caller sends is replaced."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    owner: str = Field(min_length=1, max_length=400)
    """The owner key of the task (`Identity.owner`)."""
    tenant: str = Field(pattern=TENANT_PATTERN)
    four_eyes: bool = False
    """The submitter may not approve their own task (`Settings.four_eyes_tenants`)."""
    submitter: Identity | None = None

    def refusal(
        self, actor: Identity | None, action: Action, *, approving: bool = False
    ) -> str | None:
        """Why `actor` may not do `action` to this task, or None if they may.

        The same rules as the API (`Identity.can_see` and `Identity.require`), plus
        four-eyes on an approval; an action without a claim is refused (only the
        service fills it)."""
        if actor is None:
            return (
                f"{action.value} refused: no identity claim; act through the Switchboard "
                "API or CLI, which fill it from the verified caller"
            )
        if self.tenant != actor.tenant and Role.ADMIN not in actor.roles:
            return (
                f"{action.value} refused: the task belongs to another tenant than '{actor.tenant}'"
            )
        try:
            actor.require(action, self.owner)
        except Forbidden as exc:
            return str(exc)
        if self.four_eyes and approving and actor.owner == self.owner:
            return four_eyes_refusal(self.tenant)
        return None


class Claimed(BaseModel):
    """A decision or intervention: `actor` is the verified caller, set by the service
    (never from a request body) and checked by the workflow against the task's policy."""

    model_config = ConfigDict(extra="forbid")

    by: str = Field(default="local", min_length=1, max_length=200)
    actor: Identity | None = None
    signature: str | None = Field(default=None, max_length=128)
    """HMAC of `actor` for this update (`switchboard.claim_signing`), when a claim key is set."""


class CancelInput(Claimed):
    """Cancel with a verified identity: validated and recorded, then Temporal's cancel."""


def four_eyes_refusal(tenant: str) -> str:
    return (
        f"four-eyes is on for tenant '{tenant}': the submitter may not approve their own "
        "task; ask another approver"
    )


def tenant_of(owner: str) -> str:
    """The tenant of an owner key (`tenant/subject`, or a local name: its own tenant)."""
    return owner.split("/", 1)[0]


def local_identity(name: str) -> Identity:
    """Local mode: the declared name, its own tenant, requester and approver."""
    return Identity(subject=name, name=name, tenant=tenant_of(name), roles=LOCAL_ROLES, via="local")
