"""Repository references: tell a git URL from a local path and check it before a task starts.

A task names its repository as the user typed it. Checking it here, before a
workflow starts, turns "no such directory" into an immediate, clear error rather
than a failed `prepare_repo` activity minutes later. Only local paths are
checked on disk; a remote URL is checked for shape only (fetching it is the
worker's job).

Local paths may be confined to roots (`Settings.repo_roots_for`): a path outside
them, or one the server cannot read, gets one uniform message that says nothing
about what is on disk, so a caller cannot map the server's filesystem with it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = [
    "NOT_ALLOWED",
    "has_control_chars",
    "is_remote",
    "normalise_repo",
    "redact_repo",
    "split_credentials",
    "validate_repo_reference",
]

NOT_ALLOWED = (
    "repo {repo!r} is not a git repository this server may use: give a git URL, or the "
    "top-level directory of a git repository under an allowed root{roots}"
)
"""The one answer for a local path that is outside the roots, unreadable or malformed."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control_chars(value: str) -> bool:
    """Whether `value` holds a NUL, newline or other control character."""
    return _CONTROL.search(value) is not None


# `user@host:path` (git's scp-like syntax). A bare `host:path` is also scp-like to
# git, but it is indistinguishable from a local file name containing a colon, so
# we only treat it as remote when a user is given.
_SCP_LIKE = re.compile(r"^[A-Za-z0-9._~-]+@[A-Za-z0-9.-]+:(?!//).+")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$")
_SCHEMES = frozenset({"http", "https", "ssh", "git", "file", "git+ssh", "ssh+git"})


def is_remote(repo: str) -> bool:
    """Whether `repo` is a git URL (`scheme://...` or `user@host:path`) rather than a path."""
    repo = repo.strip()
    return "://" in repo or bool(_SCP_LIKE.match(repo))


def split_credentials(repo: str) -> tuple[str, str | None, str | None]:
    """(URL without credentials, user, password) of an http(s) URL with `user:token@`.

    Any other reference comes back unchanged with no credentials (an ssh user name
    is no secret). Git is then given the credentials only at fetch or push time.
    """
    if not re.match(r"^https?://", repo.strip(), re.IGNORECASE):
        return repo, None, None
    try:
        parts = urlsplit(repo.strip())
        user, password, host = parts.username, parts.password, parts.hostname
        port = parts.port
    except ValueError:
        return repo, None, None
    if (user is None and password is None) or host is None:
        return repo, None, None
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{port}" if port is not None else ""
    bare = urlunsplit(parts._replace(netloc=netloc))
    return bare, unquote(user) if user else None, unquote(password) if password else None


def redact_repo(repo: str) -> str:
    """`repo` fit to store, show or log: an http(s) URL's credentials removed."""
    return split_credentials(repo)[0]


def normalise_repo(repo: str) -> str:
    """The canonical form of a repository reference.

    Local paths become absolute (with `~` expanded and symlinks resolved), so the
    worker, which runs in another directory or on another host, reads the same
    repository the user meant. URLs are returned as given, minus surrounding
    whitespace.
    """
    repo = repo.strip()
    if is_remote(repo):
        return repo
    try:
        return str(Path(repo).expanduser().resolve())
    except (OSError, RuntimeError, ValueError):
        return repo  # validation refuses it; this only must not raise


def validate_repo_reference(repo: str, roots: Sequence[Path] | None = None) -> None:
    """Refuse a repository reference that cannot work, with a message saying why.

    Args:
        repo: A local path or a git URL.
        roots: Directories a local path must lie under (after resolving symlinks);
            `None` allows any path, an empty sequence none.

    Raises:
        ValueError: An unsupported URL scheme, control characters, or a local path
            that does not exist, is not a directory, or is not the top of a git
            repository. A local path outside `roots`, unreadable or malformed gets
            the same `NOT_ALLOWED` message whatever is on disk.
    """
    repo = repo.strip()
    if not repo:
        raise ValueError("repo is empty: give a local path to a git repository or a git URL")
    if has_control_chars(repo):
        raise ValueError("repo holds control characters: give a plain path or git URL")
    if is_remote(repo):
        _validate_url(repo)
        return
    refusal = ValueError(NOT_ALLOWED.format(repo=repo, roots=_roots_hint(roots)))
    try:
        path = Path(repo).expanduser()
        resolved = path.resolve()
        if roots is not None and not _under_any(resolved, roots):
            raise refusal
        _validate_local(path)
    except (OSError, RuntimeError) as exc:  # EACCES, ENAMETOOLONG, ~nosuchuser, loops
        raise refusal from exc


def _roots_hint(roots: Sequence[Path] | None) -> str:
    if roots is None:
        return ""
    if not roots:
        return " (this server accepts no local paths from you: use a git URL)"
    return f" ({', '.join(str(root) for root in roots)})"


def _under_any(path: Path, roots: Sequence[Path]) -> bool:
    for root in roots:
        try:
            resolved_root = root.expanduser().resolve()
        except (OSError, RuntimeError):
            continue
        if path == resolved_root or path.is_relative_to(resolved_root):
            return True
    return False


def _validate_url(repo: str) -> None:
    match = _URL.match(repo)
    if match is None:
        return  # scp-like `user@host:path`
    scheme = match.group("scheme").lower()
    if scheme not in _SCHEMES:
        raise ValueError(
            f"unsupported repository URL scheme {scheme!r} in {repo!r}: "
            f"use one of {', '.join(sorted(_SCHEMES))}, or a local path"
        )
    if not match.group("rest").strip("/"):
        raise ValueError(f"repository URL {repo!r} names no repository")


def _validate_local(path: Path) -> None:
    """Specific messages: only reached for paths the caller may use."""
    if not path.exists():
        raise ValueError(
            f"local repository path {str(path)!r} does not exist: "
            "give the path of a git repository on this machine, or a git URL"
        )
    if not path.is_dir():
        raise ValueError(f"local repository path {str(path)!r} is a file, not a directory")
    resolved = path.resolve()
    if _is_git_top(resolved):
        return
    for parent in resolved.parents:
        if _is_git_top(parent):
            raise ValueError(
                f"{str(path)!r} is inside the git repository {str(parent)!r} but is not its "
                "top level: pass the repository's top-level directory"
            )
    raise ValueError(
        f"{str(path)!r} is not a git repository: run `git init` there first, "
        "or give the path of an existing repository"
    )


def _is_git_top(path: Path) -> bool:
    """A work tree (`.git` dir or file, as in worktrees and submodules) or a bare repo."""
    if (path / ".git").exists():
        return True
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()
