"""One `Settings` object, read from `SWITCHBOARD_*` environment variables (and `.env`).

Defaults work on one machine with nothing configured. Outside development,
validators refuse unsafe values instead of running with them.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from switchboard import wire
from switchboard.frontends import DEFAULT_BACKGROUND_MARKERS, PUBLIC_MODEL
from switchboard.limits import TenantLimits


def _default_host_id() -> str:
    host = re.sub(r"[^a-zA-Z0-9-]", "-", socket.gethostname()).strip("-").lower()
    return host or "localhost"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SWITCHBOARD_", env_file=".env", extra="ignore", populate_by_name=True
    )

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path(".switchboard")

    # Temporal
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_ui_port: int = 8233
    task_queue: str = wire.TASK_QUEUE
    worker_max_cached_workflows: int = Field(default=500, ge=0)
    """Workflows kept in memory (~420 KiB each); an evicted one replays on its next event."""
    worker_sticky_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    """How long a workflow task waits on a worker's own (sticky) queue before any
    worker may take it: what a killed worker's workflows wait before they move on."""
    worker_metrics_port: int = Field(default=9464, ge=0, le=65535)
    """Prometheus endpoint of the worker (SDK and Switchboard metrics); 0 turns it off."""
    task_worker_nice: int = Field(default=10, ge=0, le=19)
    """CPU niceness of a worker that runs tasks and no chats (`switchboard worker
    --queues tasks`, beside a `--queues chat` one); its sandboxed commands and git
    inherit it, and its Docker sandboxes get the matching `cpu_shares`, so chat turns
    get the CPU before task steps do. 0: the same priority as everything else. Not
    used by `switchboard up` (one worker for every queue): on a shared 2-core machine
    it did not shorten the chat's TTFT beyond the noise (docs/benchmarks.md)."""
    host_id: str = Field(default_factory=_default_host_id, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")

    # Model (the official openai client, any OpenAI-compatible server)
    llm_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SWITCHBOARD_LLM_BASE_URL", "OPENAI_BASE_URL")
    )
    llm_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SWITCHBOARD_LLM_API_KEY", "OPENAI_API_KEY")
    )
    llm_model: str = "gpt-4.1-mini"
    planner_model: str | None = None
    llm_timeout_seconds: float = Field(default=120.0, gt=0)
    model_server_host: str = "127.0.0.1"
    model_server_port: int = 8765
    model_server_scenario: Path | None = None
    model_server_latency_ms: int = Field(default=0, ge=0)
    model_server_token_rate: float = Field(default=0.0, ge=0)

    # API
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_url: str | None = None
    repo_roots: list[Path] | None = None
    """Local repository paths must lie under one of these; default: home and the current
    directory. JSON in the environment: `SWITCHBOARD_REPO_ROOTS='["/srv/repos"]'`."""
    remote_repo_roots: list[Path] = Field(default_factory=list)
    """The same for remote callers (API bound beyond loopback, or a non-loopback client):
    none by default, so they give git URLs only."""
    max_open_sessions_per_user: int = Field(default=50, ge=1, le=100_000)
    """Open chat sessions one user may hold; the next create answers 429."""
    session_idle_hours: float = Field(default=72.0, gt=0)
    """A chat session with no message for this long closes itself (history kept)."""
    openai_models: dict[str, str] = Field(default_factory=dict)
    """Model ids the OpenAI-compatible surface lists, each mapped to an upstream model
    (`{"switchboard-large": "gpt-4.1"}`); `switchboard` is always listed and maps to
    `llm_model` unless named here. A client's `model` is never passed on raw."""
    repositories: dict[str, str] = Field(default_factory=dict)
    """Repositories people may name in a conversation by a short name
    (`{"payments-service": "https://git.example/pay.git"}`), scoped by the key: a bare
    name is everyone's, `acme/name` tenant acme's, `acme/ann/name` one user's (the
    narrowest wins; `switchboard.frontends.repositories_for`). A URL or a path given
    in words still has to pass the allowed roots."""
    openai_stream_progress_seconds: float = Field(default=300.0, ge=0, le=3600)
    """A streaming OpenAI-compatible answer whose turn started a task stays open this
    long at most, carrying the task's progress until it awaits approval or ends;
    0: the stream ends with the model's text (progress comes with the next answer)."""
    background_markers: list[str] = Field(default_factory=lambda: list(DEFAULT_BACKGROUND_MARKERS))
    """Text that marks a frontend's own request (title, tags, follow-ups): answered as a
    plain completion outside any session, never with a tool."""

    # Identity (docs/security.md, "Identity")
    auth_mode: str = Field(
        default="local", pattern=r"^(local|(tokens|oidc|proxy)(,(tokens|oidc|proxy))*)$"
    )
    """`local` (loopback only, no verification), or any of `tokens`, `oidc` and `proxy`
    (comma-separated)."""
    auth_metrics: bool = False
    """Require a token on `/metrics` too (off: scrapers reach it without one)."""
    oidc_issuer: str | None = None
    """The `iss` every access token must carry; its discovery document names the JWKS."""
    oidc_audience: str | None = None
    """The `aud` every access token must carry (this API's resource identifier)."""
    oidc_jwks_url: str | None = None
    """The issuer's key set; default: `jwks_uri` from its discovery document."""
    oidc_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "PS256", "ES256"])
    oidc_leeway_seconds: float = Field(default=30.0, ge=0, le=600)
    """Clock skew allowed on `exp`, `nbf` and `iat`."""
    oidc_jwks_cache_seconds: int = Field(default=300, ge=0)
    """How long fetched keys are kept; an unknown `kid` refetches them (rotation)."""
    oidc_jwks_refresh_cooldown_seconds: float = Field(default=10.0, ge=0, le=3600)
    """Least time between two such refetches: tokens with made-up kids cannot make
    the API hammer the provider; a rotated key is fetched at most this late."""
    oidc_name_claim: str = "name"
    oidc_tenant_claim: str = "tenant"
    oidc_roles_claim: str = "roles"
    oidc_default_tenant: str | None = None
    """Tenant for tokens without the tenant claim; unset: such tokens are refused."""
    oidc_default_roles: list[str] = Field(default_factory=lambda: ["requester"])
    """Roles for tokens without the roles claim."""
    oidc_web_client_id: str | None = None
    """The public client (authorization code + PKCE, no secret) the web chat signs in
    with; unset, the page asks for a pasted API token instead."""
    oidc_web_scopes: str = "openid"
    """The scopes the web chat asks for (space-separated)."""
    oidc_web_resource: str | None = None
    """The resource indicator (RFC 8707) the web chat asks an access token for, so the
    provider issues a JWT for this API's audience; unset, none is sent."""
    four_eyes_tenants: str = Field(
        default="", pattern=r"^(\*|[A-Za-z0-9._@+-]+(,[A-Za-z0-9._@+-]+)*)?$"
    )
    """Tenants (comma-separated, or `*` for all) where the submitter of a task may not
    approve it; checked by the API and again by the task's workflow."""
    claim_key: SecretStr | None = None
    """Shared by the API and the workers: identity claims in decisions and cancels are
    signed with it and the workers refuse an unsigned or wrongly signed one."""
    update_wait_seconds: float = Field(default=30.0, gt=0, le=600)
    """How long a decision or cancel waits for a worker to take it before the caller
    gets 503 (retry with the same `Idempotency-Key`: it is applied at most once)."""

    # Per-tenant limits (switchboard.limits; docs/security.md, "Tenant limits")
    tenant_limits: dict[str, TenantLimits] = Field(default_factory=dict)
    """Limits by tenant, JSON in the environment:
    `SWITCHBOARD_TENANT_LIMITS='{"acme": {"concurrent_tasks": 5, "tokens_per_day": 2000000}}'`."""
    default_tenant_limits: TenantLimits = Field(default_factory=TenantLimits)
    """The limits of every tenant not in `tenant_limits` (default: none)."""

    # Trusted proxy identity (auth_mode proxy; docs/security.md, "Identity")
    proxy_secret: SecretStr | None = None
    """`proxy` mode: the shared secret a trusted proxy sends in `proxy_secret_header`;
    forwarded user headers are honoured only on a request that carries it."""
    proxy_secret_header: str = "X-Switchboard-Proxy-Secret"
    proxy_user_header: str = "X-Forwarded-User"
    """The user's stable id (the subject) as the proxy forwards it."""
    proxy_email_header: str = "X-Forwarded-Email"
    """The user's display name or e-mail (optional)."""
    proxy_tenant_header: str = "X-Forwarded-Tenant"
    proxy_roles_header: str = "X-Forwarded-Roles"
    """Comma- or space-separated roles; absent: `proxy_default_roles`."""
    proxy_default_tenant: str | None = None
    """Tenant for forwarded users without a tenant header; unset: they are refused."""
    proxy_default_roles: list[str] = Field(default_factory=lambda: ["requester"])

    # Sandbox
    sandbox: Literal["auto", "docker", "bwrap"] = "auto"
    sandbox_image: str = "switchboard-sandbox:latest"
    sandbox_command_timeout_seconds: int = Field(default=120, ge=1, le=3600)
    step_wait_notice_seconds: float = Field(default=30.0, gt=0, le=3600)
    """A subagent step waiting this long on the model or a tool says so as a task
    event ("waiting on the model for 30 s"), then again at twice the time, and so on."""
    sandbox_output_limit_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    sandbox_memory_mb: int = Field(default=1024, ge=64)
    sandbox_pids_limit: int = Field(default=256, ge=16)
    sandbox_cpus: float = Field(default=1.0, gt=0)
    sandbox_uid: int = Field(default=65534, ge=1)
    """The uid commands run as when root owns the worktree (never root's own)."""
    sandbox_gid: int = Field(default=65534, ge=1)
    sandbox_disk_bytes: int = Field(default=1024**3, ge=1024 * 1024)
    """What one subagent's worktree may hold (apparent size of its files)."""
    sandbox_disk_files: int = Field(default=20_000, ge=100)
    """How many files and directories one subagent's worktree may hold."""
    sandbox_file_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024)
    """The largest file a command may write (RLIMIT_FSIZE)."""

    # Maintenance
    mirror_gc_interval_hours: float = Field(default=24.0, gt=0)
    """How often each host runs `git gc` in its mirrors (a Temporal Schedule)."""
    mirror_gc_prune_hours: int = Field(default=24, ge=1)
    """Unreachable objects younger than this survive a gc (a task may still use them)."""
    task_retention_hours: float = Field(default=168.0, ge=0)
    """How long an ended task's repository (its branches and diff) is kept on its host;
    the maintenance schedule removes it after that. Stored credentials no task holds
    (their tasks' cleanup releases them at once) are deleted after the same time."""

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment == "production":
            if self.llm_api_key is None:
                raise ValueError(
                    "SWITCHBOARD_LLM_API_KEY / OPENAI_API_KEY must be set in production"
                )
            if (
                self.llm_base_url
                and self.llm_base_url.startswith("http://")
                and not ("127.0.0.1" in self.llm_base_url or "localhost" in self.llm_base_url)
            ):
                raise ValueError("the model base URL must use https outside development")
        return self

    @model_validator(mode="after")
    def _refuse_unusable_auth(self) -> Settings:
        weak = [alg for alg in self.oidc_algorithms if alg.lower() == "none" or alg[:2] == "HS"]
        if weak:
            raise ValueError(
                f"SWITCHBOARD_OIDC_ALGORITHMS may not hold {weak}: only asymmetric "
                "signatures (RS*, PS*, ES*, EdDSA) verify against a public key set"
            )
        if "oidc" in self.auth_modes and not (self.oidc_issuer and self.oidc_audience):
            raise ValueError(
                "SWITCHBOARD_AUTH_MODE includes oidc: set SWITCHBOARD_OIDC_ISSUER and "
                "SWITCHBOARD_OIDC_AUDIENCE"
            )
        if "proxy" in self.auth_modes and (
            self.proxy_secret is None or len(self.proxy_secret.get_secret_value()) < 16
        ):
            raise ValueError(
                "SWITCHBOARD_AUTH_MODE includes proxy: set SWITCHBOARD_PROXY_SECRET "
                "(at least 16 characters) to the secret the proxy sends"
            )
        return self

    @property
    def auth_modes(self) -> frozenset[str]:
        return frozenset(self.auth_mode.split(","))

    def four_eyes_for(self, tenant: str) -> bool:
        """Four-eyes is on for `tenant` (`four_eyes_tenants`)."""
        tenants = self.four_eyes_tenants.split(",")
        return "*" in tenants or tenant in tenants

    @property
    def auth_is_local(self) -> bool:
        """Local mode: callers are who they say they are (loopback only)."""
        return self.auth_modes == {"local"}

    @property
    def api_tokens_file(self) -> Path:
        return self.data_dir / "api-tokens.json"

    @property
    def model_base_url(self) -> str:
        """Where model calls go: the configured server, else the scripted one."""
        if self.llm_base_url:
            return self.llm_base_url
        return f"http://{self.model_server_host}:{self.model_server_port}/v1"

    @property
    def uses_scripted_model(self) -> bool:
        return self.llm_api_key is None and self.llm_base_url is None

    def upstream_model(self, public: str) -> str | None:
        """The upstream model behind a public model id; None when it is not offered."""
        if public in self.openai_models:
            return self.openai_models[public]
        return self.llm_model if public == PUBLIC_MODEL else None

    @property
    def public_models(self) -> list[str]:
        return [PUBLIC_MODEL, *(m for m in self.openai_models if m != PUBLIC_MODEL)]

    @property
    def api_is_loopback(self) -> bool:
        """Whether the API listens on loopback only (so every caller is on this machine)."""
        return is_loopback(self.api_host)

    def repo_roots_for(self, *, remote: bool) -> list[Path]:
        """Where local repository paths may be, for a local or a remote caller."""
        if remote:
            return list(self.remote_repo_roots)
        if self.repo_roots is not None:
            return list(self.repo_roots)
        return [Path.home(), Path.cwd()]

    @property
    def api_base_url(self) -> str:
        return self.api_url or f"http://{self.api_host}:{self.api_port}"

    @property
    def host_queue(self) -> str:
        return wire.host_queue(self.host_id)

    @property
    def mirrors_dir(self) -> Path:
        return self.data_dir / "mirrors"

    @property
    def credentials_dir(self) -> Path:
        """Repository credentials by reference (`switchboard.credentials`), 0700."""
        return self.data_dir / "credentials"

    @property
    def task_repos_dir(self) -> Path:
        """One bare repository per task, borrowing its mirror's objects."""
        return self.data_dir / "task-repos"

    @property
    def worktrees_dir(self) -> Path:
        return self.data_dir / "worktrees"

    @property
    def transcripts_dir(self) -> Path:
        return self.data_dir / "transcripts"

    @property
    def temporal_db(self) -> Path:
        return self.data_dir / "temporal.db"


def is_loopback(host: str | None) -> bool:
    """Whether `host` (an address or `localhost`) is this machine's loopback."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
