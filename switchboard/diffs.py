"""Read a task's diff straight from git (the claim check for diffs).

Diffs never travel through workflow history: the workflow says where the diff
lives (`DiffLocation`) and readers take it from the repository mirror. Reading is
read-only (`git diff` only) and bounded: the patch is streamed from git and cut at
`max_bytes`, so a huge diff costs at most that much memory.
"""

from __future__ import annotations

from pathlib import Path

import git

from switchboard.models import DiffStat

__all__ = ["DEFAULT_MAX_BYTES", "read_diff"]

DEFAULT_MAX_BYTES = 200_000
_CHUNK = 64 * 1024


def read_diff(
    mirror_path: str, base_commit: str, ref: str, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[DiffStat, str, bool]:
    """The changes from `base_commit` to `ref` in a repository (bare mirror or work tree).

    Args:
        mirror_path: The repository holding both commits.
        base_commit: Where the task started.
        ref: A branch, tag or commit with the task's changes.
        max_bytes: Most bytes of patch text to return.

    Returns:
        The diff stat (always complete), the patch text (possibly cut at a line
        boundary) and whether it was cut.

    Raises:
        FileNotFoundError: `mirror_path` is not a git repository on this host.
        ValueError: `base_commit` or `ref` does not name a commit there.
    """
    path = Path(mirror_path)
    if not path.is_dir():
        raise FileNotFoundError(f"no repository at {mirror_path!r} on this host")
    try:
        repo = git.Repo(path)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
        raise FileNotFoundError(f"{mirror_path!r} is not a git repository") from exc
    with repo:
        base = _resolve(repo, base_commit)
        head = _resolve(repo, ref)
        stat = _diff_stat(repo, base, head)
        patch, truncated = _patch(repo, base, head, max_bytes)
    return stat, patch, truncated


def _resolve(repo: git.Repo, rev: str) -> str:
    if rev.startswith("-"):  # never let a revision be read as an option
        raise ValueError(f"invalid revision {rev!r}")
    try:
        return str(
            repo.git.rev_parse("--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
        )
    except git.GitCommandError as exc:
        raise ValueError(f"{rev!r} does not name a commit in {repo.git_dir}") from exc


def _diff_stat(repo: git.Repo, base: str, head: str) -> DiffStat:
    # -z keeps file names with spaces, tabs or non-ASCII bytes intact.
    raw = str(repo.git.diff("--numstat", "-z", "--no-color", "--no-ext-diff", base, head))
    fields = raw.split("\0")
    stat = DiffStat()
    i = 0
    while i < len(fields):
        entry = fields[i]
        i += 1
        if not entry:
            continue
        added, deleted, name = entry.split("\t", 2)
        if not name:  # a rename: the old and the new name follow as their own fields
            name = fields[i + 1] if i + 1 < len(fields) else fields[i]
            i += 2
        stat.files_changed += 1
        stat.files.append(name)
        # Binary files report "-" for both counts.
        stat.insertions += int(added) if added.isdigit() else 0
        stat.deletions += int(deleted) if deleted.isdigit() else 0
    return stat


def _patch(repo: git.Repo, base: str, head: str, max_bytes: int) -> tuple[str, bool]:
    process = repo.git.diff(
        "--no-color", "--no-ext-diff", base, head, as_process=True, stdout_as_string=False
    )
    stdout = process.proc.stdout
    buffer = bytearray()
    truncated = False
    try:
        while chunk := stdout.read(_CHUNK):
            buffer += chunk
            if len(buffer) > max_bytes:
                truncated = True
                break
    finally:
        if truncated:
            process.proc.kill()
        stdout.close()
        process.proc.wait()
    if truncated:
        cut = buffer.rfind(b"\n", 0, max_bytes + 1)
        del buffer[cut + 1 if cut >= 0 else max_bytes :]
    return buffer.decode("utf-8", errors="replace"), truncated
