"""The cached bare mirror of each repository: create, fetch, resolve the base commit."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from pathlib import Path

import git

from activities._git_util import (
    FETCH_TIMEOUT_SECONDS,
    credentials_for,
    fail,
    flock,
    remote_git,
    stderr_of,
)
from activities._reach import unreachable_reason
from activities._task_repo import ensure_task_repo, pin_base
from switchboard.contracts import PreparedRepo, PrepareRepoInput
from switchboard.repo_refs import (
    is_remote,
    normalise_repo,
    redact_repo,
    validate_repo_reference,
)
from switchboard.settings import Settings
from switchboard.wire import Errors

# Our own `switchboard/*` branches live in refs/heads of the mirror; the user's
# branches land in refs/remotes/origin, so a prune never touches ours.
_FETCH_REFSPECS = ("+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")
_ORIGIN = "refs/remotes/origin/"


# ---- references ---------------------------------------------------------------------


def mirror_path_for(mirrors_dir: Path, repo: str) -> Path:
    """Where the mirror of `repo` (a URL or an absolute path) lives: one per repository."""
    key = repo.strip().rstrip("/")
    key = key.removesuffix(".git") if is_remote(key) else key
    return mirrors_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.git"


# ---- mirror -------------------------------------------------------------------------


def prepare_mirror(settings: Settings, input: PrepareRepoInput) -> PreparedRepo:
    """Create or update the cached bare mirror of a repository and resolve the base commit."""
    try:
        validate_repo_reference(input.repo)
    except ValueError as err:
        kind = Errors.INVALID_INPUT if is_remote(input.repo) else Errors.REPO_NOT_FOUND
        raise fail(str(err).replace(input.repo, redact_repo(input.repo)), kind) from None
    # The credentials of `https://user:token@...` go to git only in fetch's environment:
    # never into the mirror's config (a sandbox of this repository reads it) or a message.
    origin, user, password = credentials_for(
        settings, normalise_repo(input.repo), input.credential_ref
    )
    local = not is_remote(origin)
    base_ref = input.base_ref.strip() if input.base_ref is not None else None
    if base_ref is not None and (not base_ref or base_ref.startswith("-")):
        raise fail(
            f"base_ref {input.base_ref!r} is not a branch, tag or commit", Errors.INVALID_INPUT
        )

    if (reason := unreachable_reason(origin)) is not None:
        raise fail(f"cannot reach {origin}: {reason}", Errors.REPO_UNREACHABLE)
    mirrors_dir = settings.mirrors_dir.resolve()
    mirrors_dir.mkdir(parents=True, exist_ok=True)
    mirror = mirror_path_for(mirrors_dir, origin)
    arrived, who = time.monotonic(), _fingerprint(user, password)
    with flock(mirror.with_suffix(".lock")):
        created = not (mirror / "HEAD").is_file()
        if created:
            _init_mirror(mirror, origin)
        g = remote_git(mirror, user, password)
        if created or not _fetched_since(mirror, arrived, who):
            _fetch(g, mirror, who, origin, created)
        name, commit = _resolve_base(g, origin, base_ref)
        if input.task_id is not None:
            pin_base(mirror, input.task_id, commit)
    repo = mirror
    if input.task_id is not None:
        repo = ensure_task_repo(settings, mirror, input.task_id, origin)
    return PreparedRepo(
        repo=origin,
        mirror_path=str(repo),
        base_ref=name,
        base_commit=commit,
        is_local=local,
        host_queue=settings.host_queue,
    )


_FETCHED: dict[Path, tuple[float, str]] = {}
"""Per mirror, in this process: when its last successful fetch began (monotonic), and
with which credentials (a digest, kept in memory only)."""


def _fingerprint(user: str | None, password: str | None) -> str:
    return hashlib.sha256(f"{user}\0{password}".encode()).hexdigest()


def _fetched_since(mirror: Path, arrived: float, who: str) -> bool:
    """Whether a fetch with the same credentials began after this call arrived: what it
    fetched is at least as fresh as a fetch of this call's own (a burst of tasks on one
    repository then pays one fetch, not one each in line behind the mirror's lock). A
    fetch with other credentials does not count: it proves nothing of these."""
    last = _FETCHED.get(mirror)
    return last is not None and last[0] >= arrived and last[1] == who


def _fetch(g: git.Git, mirror: Path, who: str, origin: str, created: bool) -> None:
    began = time.monotonic()
    try:
        g.fetch(
            "--quiet",
            "--prune",
            "origin",
            *_FETCH_REFSPECS,
            kill_after_timeout=FETCH_TIMEOUT_SECONDS,
        )
    except git.GitCommandError as err:
        if created:
            shutil.rmtree(mirror, ignore_errors=True)
        raise fail(
            f"could not fetch {origin}: {stderr_of(err)}", Errors.REPO_FETCH_FAILED, retry=True
        ) from None
    _FETCHED[mirror] = (began, who)


def _init_mirror(mirror: Path, origin: str) -> None:
    # Built beside the final path and renamed in, so a crash never leaves half a mirror.
    tmp = mirror.with_name(f"{mirror.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    repo = git.Repo.init(tmp, bare=True)
    with repo.config_writer() as config:
        config.set_value('remote "origin"', "url", origin)
        config.set_value('remote "origin"', "fetch", _FETCH_REFSPECS[0])
    repo.close()
    tmp.rename(mirror)


def _resolve_base(g: git.Git, origin: str, base_ref: str | None) -> tuple[str, str]:
    """(name, commit) of the base: `base_ref`, else the remote's default branch."""
    refs: dict[str, tuple[str, str]] = {}  # ref -> (commit, symref target)
    for line in g.for_each_ref(
        "--format=%(refname)%00%(objectname)%00%(symref)", _ORIGIN
    ).splitlines():
        ref, sha, target = line.split("\0")
        refs[ref] = (sha, target)
    branches = sorted(r.removeprefix(_ORIGIN) for r, (_, t) in refs.items() if not t)
    if not branches:
        raise fail(f"{origin} has no commits: commit something first", Errors.INVALID_INPUT)
    if base_ref is not None:
        name = base_ref.removeprefix("refs/heads/")
        if (hit := refs.get(_ORIGIN + name)) is not None:
            return name, hit[0]
        try:
            return base_ref, g.rev_parse("--verify", "--quiet", f"{base_ref}^{{commit}}")
        except git.GitCommandError:
            raise fail(
                f"base_ref {base_ref!r} is not a branch, tag or commit of {origin} "
                f"(branches: {', '.join(branches[:20])})",
                Errors.INVALID_INPUT,
            ) from None
    head = refs.get(_ORIGIN + "HEAD")
    if head is None:
        try:  # asks the remote once; later prepares read the stored symref
            g.remote("set-head", "origin", "--auto")
            target = g.symbolic_ref(_ORIGIN + "HEAD")
            head = (g.rev_parse(target), target)
        except git.GitCommandError:
            head = None
    if head is not None and head[1].removeprefix(_ORIGIN) in branches:
        return head[1].removeprefix(_ORIGIN), head[0]
    name = next((b for b in ("main", "master") if b in branches), branches[0])
    return name, refs[_ORIGIN + name][0]
