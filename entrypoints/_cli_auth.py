"""`switchboard token create|list|revoke` (the API's static tokens) and `switchboard login`.

`token` edits the hashed token file under the data directory (an operator's tool: it
needs write access there). `login` stores the caller's own token in their config
directory with mode 0600; `resolve_token` finds it again (`--token`, then
`SWITCHBOARD_TOKEN`, then the stored one).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from entrypoints._cli_common import EXIT_FAILED, EXIT_USAGE, fail, load_settings, out
from switchboard.api_tokens import TokenStore
from switchboard.identity import Role

__all__ = [
    "LOGIN_HINT",
    "TOKEN_ENV",
    "login",
    "resolve_token",
    "stored_token_path",
    "token_app",
    "use_token",
]

TOKEN_ENV = "SWITCHBOARD_TOKEN"
LOGIN_HINT = (
    "sign in with 'switchboard login' (or pass --token, or set SWITCHBOARD_TOKEN) "
    "with a token from your identity provider or 'switchboard token create'"
)
"""What a refused (401) CLI call tells the user to do."""

token_app = typer.Typer(
    help="Static API tokens (stored hashed under the data directory).", no_args_is_help=True
)


def stored_token_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "switchboard" / "token"


def resolve_token(explicit: str | None = None) -> str | None:
    """The token to send: the argument, else the global `--token`, else
    `SWITCHBOARD_TOKEN`, else `switchboard login`'s."""
    if explicit:
        return explicit
    given = _global_token()
    if given:
        return given
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    path = stored_token_path()
    return path.read_text().strip() or None if path.exists() else None


_given: list[str] = []
"""The `switchboard --token` of the command running now (`use_token`), if any."""


def use_token(token: str | None) -> None:
    """Set (or, with None, forget) the global `--token` for this command's API calls."""
    _given[:] = [token] if token else []


def _global_token() -> str | None:
    return _given[0] if _given else None


def _store() -> TokenStore:
    return TokenStore(load_settings().api_tokens_file)


@token_app.command("create")
def create(
    subject: Annotated[str, typer.Argument(help="Who the token is (a user or machine id).")],
    tenant: Annotated[str, typer.Option(help="The tenant it belongs to.")],
    role: Annotated[
        list[Role] | None, typer.Option("--role", help="A role, repeatable (default requester).")
    ] = None,
    name: Annotated[str, typer.Option(help="Display name.")] = "",
) -> None:
    """Create a token and print it once (only its sha256 is kept)."""
    try:
        roles_given = role or [Role.REQUESTER]
        token, record = _store().create(
            subject=subject, tenant=tenant, roles=roles_given, name=name
        )
    except ValueError as exc:
        fail(f"cannot create the token: {exc}", EXIT_USAGE)
    roles = ",".join(record.roles)
    who = f"{record.tenant}/{record.subject}"
    out().print(f"token {record.id} for {who} ({roles}):", highlight=False, markup=False)
    typer.echo(token)


@token_app.command("list")
def list_tokens() -> None:
    """The tokens (id, tenant, subject, roles, created), never the tokens themselves."""
    for record in _store().records():
        roles = ",".join(record.roles)
        who = f"{record.tenant}/{record.subject}"
        typer.echo(f"{record.id}\t{who}\t{roles}\t{record.created:%F %T}")


@token_app.command("revoke")
def revoke(token_id: Annotated[str, typer.Argument(help="The id `token list` shows.")]) -> None:
    """Revoke a token; the API refuses it from its next request."""
    if not _store().revoke(token_id):
        fail(f"no token with id {token_id!r} (see 'switchboard token list')", EXIT_FAILED)
    out().print(f"revoked {token_id}")


def login(
    token: Annotated[
        str | None, typer.Option(help="The token (default: read from standard input).")
    ] = None,
) -> None:
    """Store your API or access token (0600, in your config directory) for the CLI."""
    value = (token or typer.prompt("token", hide_input=True)).strip()
    if not value:
        fail("no token given: paste the token 'switchboard token create' printed", EXIT_USAGE)
    path = stored_token_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    out().print(f"token stored in {path} (mode 0600)")
