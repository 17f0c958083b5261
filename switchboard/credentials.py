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

Nothing is kept longer than its tasks: `put` records which task holds a reference
(`<ref>.tasks/<task_id>`, written before the credentials), `release` (the task's
cleanup on this host) drops that claim and deletes the credentials once no task
holds them, and `sweep` (the host's maintenance schedule) deletes credentials no
task holds that are older than the retention (references from before claims, a
task whose cleanup never ran here). Claims and deletions happen under one lock, so
a task starting with the same URL and token as one ending keeps its credentials.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from switchboard.repo_refs import normalise_repo, split_credentials

__all__ = ["ENV_PREFIX", "CredentialStore", "env_credentials", "env_name_for"]

ENV_PREFIX = "SWITCHBOARD_REPO_CREDENTIALS_"
_REF = re.compile(r"^cred-[0-9a-f]{32}$")
_TASK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
CLAIMS = ".tasks"
"""`<ref>.tasks/<task_id>`: an empty file per task that holds the reference."""
OWNERS = "owners"
"""`owners/<holder>`: the reference an owner's session or chat gave for a bare URL."""
_URL_WITH_USERINFO = re.compile(r"https?://[^\s/@<>\"'`]+@[^\s<>\"'`]+", re.IGNORECASE)
_TRAILING = ".,;:!?)]}*_"
"""Punctuation a URL typed in a sentence ends with, which is not part of it."""


class CredentialStore:
    """Credentials by reference, in 0600 files of one directory."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def put(self, repo: str, task_id: str | None = None) -> tuple[str, str | None]:
        """(the URL without credentials, a reference to them or None if it had none).

        With `task_id`, the task holds the reference until `release(task_id)`.
        """
        bare, user, password = split_credentials(repo)
        if user is None and password is None:
            return repo, None
        digest = hmac.new(self._key(), f"{bare}\0{user}\0{password}".encode(), hashlib.sha256)
        ref = f"cred-{digest.hexdigest()[:32]}"
        body = json.dumps({"repo": bare, "user": user, "password": password})
        with self._locked():
            if task_id is not None:
                if not _TASK.match(task_id):
                    raise ValueError(f"invalid task id {task_id!r}")
                claims = self._dir / f"{ref}{CLAIMS}"
                claims.mkdir(mode=0o700, exist_ok=True)
                (claims / task_id).touch()
            self._write(self._dir / ref, body.encode())
        return bare, ref

    def remember(self, owner: str, repo: str) -> str:
        """`repo` without credentials; they stay here for `owner`'s tasks of that URL
        (a session's default repository, a URL typed into chat), until unused for the
        retention (`sweep`)."""
        bare, user, password = split_credentials(normalise_repo(repo))
        if user is None and password is None:
            return repo
        holder = self._holder(owner, bare)
        _, ref = self.put(normalise_repo(repo), holder)
        with self._locked():
            (self._dir / OWNERS).mkdir(mode=0o700, exist_ok=True)
            self._write(self._dir / OWNERS / holder, json.dumps({"ref": ref}).encode())
        return bare

    def redact_text(self, owner: str, text: str) -> str:
        """`text` with every http(s) URL that carries credentials replaced by the URL
        without them (each remembered for `owner`, as `remember` does)."""

        def bare(match: re.Match[str]) -> str:
            url = match.group(0)
            core = url.rstrip(_TRAILING)
            return self.remember(owner, core) + url[len(core) :]

        return _URL_WITH_USERINFO.sub(bare, text)

    def for_owner(self, owner: str, repo: str) -> str | None:
        """The reference `owner` gave for the bare URL `repo` (`remember`), if any."""
        bare, _, _ = split_credentials(normalise_repo(repo))
        path = self._dir / OWNERS / self._holder(owner, bare)
        try:
            ref = json.loads(path.read_text()).get("ref")
        except (OSError, ValueError, AttributeError):
            return None
        if not isinstance(ref, str) or self.get(ref, bare) is None:
            return None
        with contextlib.suppress(OSError):
            path.touch()  # in use: the retention counts from the last use
        return ref

    def claim(self, ref: str, task_id: str) -> bool:
        """`task_id` holds `ref` too (a task started from a remembered URL)."""
        if not (_REF.match(ref) and _TASK.match(task_id)):
            return False
        with self._locked():
            if not (self._dir / ref).is_file():
                return False
            claims = self._dir / f"{ref}{CLAIMS}"
            claims.mkdir(mode=0o700, exist_ok=True)
            (claims / task_id).touch()
        return True

    def _holder(self, owner: str, bare: str) -> str:
        digest = hmac.new(self._key(), f"owner\0{owner}\0{bare}".encode(), hashlib.sha256)
        return f"owner-{digest.hexdigest()[:32]}"

    def release(self, task_id: str) -> list[str]:
        """The task no longer holds its references; the ones no task holds are deleted.
        Returns the references deleted. Idempotent."""
        if not _TASK.match(task_id):
            return []
        deleted = []
        with self._locked():
            for claims in self._dir.glob(f"cred-*{CLAIMS}"):
                claim = claims / task_id
                if not claim.exists():
                    continue
                claim.unlink()
                if not any(claims.iterdir()):
                    ref = claims.name.removesuffix(CLAIMS)
                    (self._dir / ref).unlink(missing_ok=True)
                    claims.rmdir()
                    deleted.append(ref)
        return deleted

    def release_orphans(self, live_task_ids: set[str], listed_at: float) -> list[str]:
        """Release every claim of a task that no longer runs (its cleanup never ran
        here), made before `listed_at` (when the live tasks were listed: a task being
        started since is not taken for ended). Returns the references deleted."""
        ended = set()
        for claim in self._dir.glob(f"cred-*{CLAIMS}/*"):
            with contextlib.suppress(OSError):
                if claim.name not in live_task_ids and claim.stat().st_mtime < listed_at:
                    ended.add(claim.name)
        return [ref for task_id in sorted(ended) for ref in self.release(task_id)]

    def sweep(self, older_than_seconds: float) -> list[str]:
        """Forget what owners gave (`remember`) and did not use for `older_than_seconds`,
        and delete the credentials no task holds that were stored longer ago than that;
        returns the references deleted."""
        deleted = []
        cutoff = time.time() - older_than_seconds
        for remembered in self._dir.glob(f"{OWNERS}/owner-*"):
            with contextlib.suppress(OSError):
                if remembered.stat().st_mtime < cutoff:
                    remembered.unlink()
                    deleted += self.release(remembered.name)
        with self._locked():
            for path in self._dir.glob("cred-*"):
                if not _REF.match(path.name) or not path.is_file():
                    continue
                claims = self._dir / f"{path.name}{CLAIMS}"
                if claims.is_dir() and any(claims.iterdir()):
                    continue
                if path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    shutil.rmtree(claims, ignore_errors=True)
                    deleted.append(path.name)
        return deleted

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if not self._dir.is_dir():
            self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._dir / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

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
