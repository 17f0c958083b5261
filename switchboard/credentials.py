"""Repository credentials kept out of tasks: stored by reference, resolved by the worker.

A task's repository URL may carry `https://user:token@host/...`. The token must not
reach the task's Temporal history, its status, events, search attributes, logs, the
model's prompt or any sandbox. So the process that starts the task (the API, which
the CLI and the chat gateway use) stores the credentials here, keyed by an opaque
reference, and the task carries only the URL without them plus the reference
(`TaskRequest.credential_ref`). The host activities that fetch and push resolve it
again from this store; a worker on another host (whose data directory is not this
one) reads `SWITCHBOARD_REPO_CREDENTIALS_<HOST>` (`user:token`) from its environment.

The store is a directory of 0600 files under the data directory (itself 0700).
References are an HMAC of the URL and credentials under a key kept in the store, so
the same URL and token always give the same reference (a retried start is the same
task) while the reference reveals nothing of the token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from pathlib import Path

from switchboard.repo_refs import split_credentials

__all__ = ["ENV_PREFIX", "CredentialStore", "env_credentials", "env_name_for"]

ENV_PREFIX = "SWITCHBOARD_REPO_CREDENTIALS_"
_REF = re.compile(r"^cred-[0-9a-f]{32}$")


class CredentialStore:
    """Credentials by reference, in 0600 files of one directory."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def put(self, repo: str) -> tuple[str, str | None]:
        """(the URL without credentials, a reference to them or None if it had none)."""
        bare, user, password = split_credentials(repo)
        if user is None and password is None:
            return repo, None
        digest = hmac.new(self._key(), f"{bare}\0{user}\0{password}".encode(), hashlib.sha256)
        ref = f"cred-{digest.hexdigest()[:32]}"
        body = json.dumps({"repo": bare, "user": user, "password": password})
        self._write(self._dir / ref, body.encode())
        return bare, ref

    def get(self, ref: str, repo: str) -> tuple[str | None, str | None] | None:
        """(user, password) stored under `ref` for `repo`, or None when this store lacks it."""
        if not _REF.match(ref):
            return None
        try:
            stored = json.loads((self._dir / ref).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(stored, dict) or stored.get("repo") != repo:
            return None
        return stored.get("user"), stored.get("password")

    def _key(self) -> bytes:
        path = self._dir / ".key"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            self._write(path, secrets.token_bytes(32), replace=False)
            return path.read_bytes()

    def _write(self, path: Path, data: bytes, *, replace: bool = True) -> None:
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self._dir, 0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        if replace:
            os.replace(tmp, path)
            return
        try:  # the first writer's key wins; a racing one reads it
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()


def env_name_for(repo: str) -> str | None:
    """`SWITCHBOARD_REPO_CREDENTIALS_<HOST>` for an http(s) URL (host upper-cased, every
    other character `_`), else None."""
    match = re.match(r"^https?://(?:[^@/]*@)?(\[[^\]]+\]|[^/:?#]+)", repo.strip(), re.IGNORECASE)
    if match is None:
        return None
    return ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", match.group(1).upper())


def env_credentials(repo: str) -> tuple[str | None, str | None] | None:
    """(user, password) from this process's environment for `repo`'s host, if set."""
    name = env_name_for(repo)
    value = os.environ.get(name) if name else None
    if not value:
        return None
    user, sep, password = value.partition(":")
    return (user, password) if sep else (None, user)
