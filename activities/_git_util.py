"""Helpers shared by the git plumbing modules: git commands, paths, locks, errors."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import git
from temporalio.exceptions import ApplicationError

from activities._git_env import GIT_ENV, REMOTE_GIT_ENV
from activities._git_env import add_worktree as confined_add_worktree
from switchboard.credentials import CredentialStore, env_credentials, env_name_for
from switchboard.repo_refs import split_credentials
from switchboard.settings import Settings
from switchboard.wire import Errors

FETCH_TIMEOUT_SECONDS = 1800
STDERR_TAIL_CHARS = 800
TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def git_cmd(cwd: Path) -> git.Git:
    g = git.Git(str(cwd))
    g.update_environment(**GIT_ENV)
    return g


_ASKPASS = """#!/bin/sh
case "$1" in
  Username*) printf '%s\\n' "$SWITCHBOARD_GIT_USERNAME" ;;
  *) printf '%s\\n' "$SWITCHBOARD_GIT_PASSWORD" ;;
esac
"""


@cache
def _askpass() -> str:
    """A program git asks for the credentials; it reads them from git's environment."""
    path = Path(tempfile.mkdtemp(prefix="switchboard-askpass-")) / "askpass"  # dir is 0700
    path.write_text(_ASKPASS)
    path.chmod(0o700)
    return str(path)


def remote_git(cwd: Path, user: str | None = None, password: str | None = None) -> git.Git:
    """For fetch and push from a mirror only: keeps the user's global config (credentials)."""
    g = git.Git(str(cwd))
    g.update_environment(**REMOTE_GIT_ENV)
    if user is not None or password is not None:
        # Only in this git process's environment: never in a config, URL or argv.
        g.update_environment(
            GIT_ASKPASS=_askpass(),
            SWITCHBOARD_GIT_USERNAME=user or "",
            SWITCHBOARD_GIT_PASSWORD=password or "",
        )
    return g


def credentials_for(
    settings: Settings, repo: str, ref: str | None
) -> tuple[str, str | None, str | None]:
    """(URL without credentials, user, password) for fetching or pushing `repo`.

    A reference (`switchboard.credentials`) is resolved from this host's store, else
    from `SWITCHBOARD_REPO_CREDENTIALS_<HOST>` in this worker's environment; a URL with
    credentials in it (a task started before references) still works.
    """
    origin, user, password = split_credentials(repo)
    if user is not None or password is not None:
        return origin, user, password
    found = env_credentials(origin)
    if ref is not None:
        found = CredentialStore(settings.credentials_dir).get(ref, origin) or found
        if found is None:
            raise fail(
                f"the credentials for {origin} (reference {ref}) are not on this host: "
                f"give its worker {env_name_for(origin)}=user:token in its environment",
                Errors.INVALID_INPUT,
            )
    return (origin, *found) if found is not None else (origin, None, None)


def existing_mirror(mirror_path: str) -> Path:
    mirror = Path(mirror_path)
    if not ((mirror / "HEAD").is_file() and (mirror / "objects").is_dir()):
        raise fail(
            f"no repository mirror at {mirror_path} on this host: prepare the repo again",
            Errors.REPO_NOT_FOUND,
        )
    return mirror.resolve()


def task_dir_of(settings: Settings, task_id: str) -> Path:
    if not TASK_ID.match(task_id):
        raise fail(f"invalid task id {task_id!r}", Errors.INVALID_INPUT)
    return settings.worktrees_dir.resolve() / task_id


def list_worktrees(g: git.Git) -> dict[str, dict[str, str]]:
    """`git worktree list --porcelain` as {path: {"HEAD": sha, "branch": ref, "locked": ...}}."""
    entries: dict[str, dict[str, str]] = {}
    for block in g.worktree("list", "--porcelain", "-z").split("\0\0"):
        fields = {key: value for key, _, value in (f.partition(" ") for f in block.split("\0"))}
        if "worktree" in fields:
            entries[fields.pop("worktree")] = fields
    return entries


def discard_worktree(g: git.Git, path: Path) -> None:
    if path.exists():
        g.worktree("remove", "--force", "--force", str(path), with_exceptions=False)
        rmtree(path)
    g.worktree("prune", with_exceptions=False)


def has_ref(g: git.Git, rev: str) -> bool:
    result = g.rev_parse(
        "--verify", "--quiet", rev, with_exceptions=False, with_extended_output=True
    )
    return bool(result[0] == 0)


def rmtree(path: Path) -> None:
    def make_writable(func: Any, target: str, _exc: Any) -> None:
        # A sandbox may leave read-only directories; a missing entry is already gone.
        for entry in (os.path.dirname(target), target):
            if os.path.isdir(entry) and not os.path.islink(entry):
                os.chmod(entry, os.stat(entry).st_mode | stat.S_IRWXU)
        if os.path.lexists(target):
            func(target)

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=make_writable)


def split_z(text: str) -> list[str]:
    return [part for part in text.split("\0") if part]


def stderr_of(err: git.GitCommandError) -> str:
    text = str(err.stderr).strip().removeprefix("stderr:").strip().strip("'").strip()
    return text[-STDERR_TAIL_CHARS:] or f"git exited with {err.status}"


def add_worktree(g: Any, path: Path, *args: str) -> None:
    """`git worktree add`, riding out git's race between concurrent adds.

    Six subagents start at once; a `worktree add` that scans the admin directory
    while another is half-written fails with "failed to read worktrees/<x>/...".
    Nothing was created then: prune and try again.
    """
    for attempt in range(4):
        try:
            confined_add_worktree(Path(g.working_dir), path, ["--quiet", *args])
            return
        except git.GitCommandError as err:
            if attempt == 3 or "worktrees/" not in stderr_of(err):
                raise
            shutil.rmtree(path, ignore_errors=True)
            g.worktree("prune")
            time.sleep(0.05 * (attempt + 1))


def fail(message: str, kind: str, *, retry: bool = False) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=not retry)


@contextmanager
def flock(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
