"""Git plumbing for the repository activities: mirrors, worktrees, commits, merges, diffs.

Plain synchronous functions on GitPython, so tests and benchmarks call them without
Temporal. Each runs a handful of `git` subprocesses (a few ms each); the costly ones
are a fetch (network) and `git worktree add` (a full checkout).

Bad input raises `ApplicationError(non_retryable=True)` with a `wire.Errors` type;
a failed fetch or push raises a retryable one carrying git's own words.

Trust: a worktree is writable by its sandbox, so its `.git` file is never trusted.
Commits run with `--git-dir` pointing at the worktree's admin directory inside the
mirror (which sandboxes only see read-only), found and checked on the host side.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import git
from temporalio.exceptions import ApplicationError

from activities._excludes import default_excludes_file
from activities._reach import unreachable_reason
from switchboard.contracts import (
    CommitInput,
    CommitResult,
    IntegrateInput,
    MergeOutcome,
    PreparedRepo,
    PrepareRepoInput,
    WorktreeInfo,
    WorktreeInput,
)
from switchboard.models import DiffStat, MergeResult
from switchboard.repo_refs import is_remote, normalise_repo, validate_repo_reference
from switchboard.settings import Settings
from switchboard.wire import BRANCH_PREFIX, Errors

__all__ = [
    "INTEGRATION_DIR",
    "SUBAGENT_EMAIL",
    "SUBAGENT_NAME",
    "commit_worktree",
    "create_worktree",
    "diff_stat",
    "integrate_branches",
    "is_remote",
    "mirror_path_for",
    "prepare_mirror",
    "reap_orphans",
    "remove_task_worktrees",
    "validate_repo_reference",
]

SUBAGENT_NAME = "Switchboard Subagent"
SUBAGENT_EMAIL = "subagent@switchboard.local"
INTEGRATION_DIR = "_integration"
FETCH_TIMEOUT_SECONDS = 1800
STDERR_TAIL_CHARS = 800

# Our own `switchboard/*` branches live in refs/heads of the mirror; the user's
# branches land in refs/remotes/origin, so a prune never touches ours.
_FETCH_REFSPECS = ("+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")
_ORIGIN = "refs/remotes/origin/"
_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")

# Every git call runs with these: no prompts (a worker has no terminal), a fixed
# identity, and no hooks or signing from the host's global config.
_GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_AUTHOR_NAME": SUBAGENT_NAME,
    "GIT_AUTHOR_EMAIL": SUBAGENT_EMAIL,
    "GIT_COMMITTER_NAME": SUBAGENT_NAME,
    "GIT_COMMITTER_EMAIL": SUBAGENT_EMAIL,
    "GIT_CONFIG_COUNT": "4",
    "GIT_CONFIG_KEY_0": "core.hooksPath",
    "GIT_CONFIG_VALUE_0": os.devnull,
    "GIT_CONFIG_KEY_1": "commit.gpgSign",
    "GIT_CONFIG_VALUE_1": "false",
    "GIT_CONFIG_KEY_2": "advice.detachedHead",
    "GIT_CONFIG_VALUE_2": "false",
    # A worktree is written by a model: never let its config start a program.
    "GIT_CONFIG_KEY_3": "core.fsmonitor",
    "GIT_CONFIG_VALUE_3": "false",
}


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
        raise _fail(str(err), kind) from None
    origin = normalise_repo(input.repo)
    local = not is_remote(origin)
    base_ref = input.base_ref.strip() if input.base_ref is not None else None
    if base_ref is not None and (not base_ref or base_ref.startswith("-")):
        raise _fail(
            f"base_ref {input.base_ref!r} is not a branch, tag or commit", Errors.INVALID_INPUT
        )

    if (reason := unreachable_reason(origin)) is not None:
        raise _fail(f"cannot reach {origin}: {reason}", Errors.REPO_UNREACHABLE)
    mirrors_dir = settings.mirrors_dir.resolve()
    mirrors_dir.mkdir(parents=True, exist_ok=True)
    mirror = mirror_path_for(mirrors_dir, origin)
    with _flock(mirror.with_suffix(".lock")):
        created = not (mirror / "HEAD").is_file()
        if created:
            _init_mirror(mirror, origin)
        g = _git(mirror)
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
            raise _fail(
                f"could not fetch {origin}: {_stderr(err)}", Errors.REPO_FETCH_FAILED, retry=True
            ) from None
        name, commit = _resolve_base(g, origin, base_ref)
    return PreparedRepo(
        repo=origin,
        mirror_path=str(mirror),
        base_ref=name,
        base_commit=commit,
        is_local=local,
        host_queue=settings.host_queue,
    )


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
        raise _fail(f"{origin} has no commits: commit something first", Errors.INVALID_INPUT)
    if base_ref is not None:
        name = base_ref.removeprefix("refs/heads/")
        if (hit := refs.get(_ORIGIN + name)) is not None:
            return name, hit[0]
        try:
            return base_ref, g.rev_parse("--verify", "--quiet", f"{base_ref}^{{commit}}")
        except git.GitCommandError:
            raise _fail(
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


# ---- worktrees ----------------------------------------------------------------------


def create_worktree(settings: Settings, input: WorktreeInput) -> WorktreeInfo:
    """A worktree for one subagent on its branch; idempotent, and keeps an existing branch."""
    mirror = _mirror(input.mirror_path)
    path = _task_dir(settings, input.task_id) / str(input.index)
    if input.branch.startswith("-") or not input.branch.strip():
        raise _fail(f"invalid branch name {input.branch!r}", Errors.INVALID_INPUT)
    g = _git(mirror)
    ref = f"refs/heads/{input.branch}"
    if path.exists():
        entry = _worktrees(g).get(str(path.resolve()))
        if entry is not None and "locked" not in entry and (path / ".git").is_file():
            if entry.get("branch") != ref:
                raise _fail(
                    f"{path} already holds {entry.get('branch', 'a detached HEAD')}, "
                    f"not {input.branch}",
                    Errors.INVALID_INPUT,
                )
            return WorktreeInfo(path=str(path), branch=input.branch, head=entry["HEAD"])
        _discard_worktree(g, path)  # half-made (a crash mid-checkout) or stray files
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _add_worktree(g, path, "-b", input.branch, str(path), input.base_commit)
    except git.GitCommandError as err:
        # Usually the branch outlived its worktree (a new round, or this host lost the
        # directory): check it out again, keeping its commits.
        g.worktree("prune")
        if not _has_ref(g, ref):
            raise _fail(
                f"cannot create worktree {input.branch} at {input.base_commit}: {_stderr(err)}",
                Errors.INVALID_INPUT,
            ) from None
        g.worktree("add", "--quiet", str(path), input.branch)
        return WorktreeInfo(path=str(path), branch=input.branch, head=g.rev_parse(ref))
    head = input.base_commit if _SHA.match(input.base_commit) else g.rev_parse(ref)
    return WorktreeInfo(path=str(path), branch=input.branch, head=head)


def commit_worktree(settings: Settings, input: CommitInput) -> CommitResult:
    """Commit everything in a worktree (if anything changed) and measure it against the base."""
    work_tree = Path(input.worktree_path).resolve()
    admin = _admin_dir(settings, work_tree)
    g = _git(work_tree)
    excludes = default_excludes_file(settings.data_dir)  # no build litter in commits
    g.set_persistent_git_options(
        git_dir=str(admin), work_tree=str(work_tree), c=f"core.excludesFile={excludes}"
    )
    g.add("--all")
    # Exit 1 means "staged changes"; anything else odd surfaces from the commit itself.
    staged = g.diff("--cached", "--quiet", with_exceptions=False, with_extended_output=True)[0] != 0
    if staged:
        message = input.message.strip() or "Subagent changes"
        g.commit("--quiet", "--no-verify", "-m", message)
    head = g.rev_parse("HEAD")
    return CommitResult(
        head=head, committed=staged, diff_stat=diff_stat(g, input.base_commit, head)
    )


def _admin_dir(settings: Settings, work_tree: Path) -> Path:
    """The mirror-side admin directory of a worktree, never trusting the worktree itself.

    The `.git` file is only a hint: it must point into our mirrors directory at an
    admin directory that points back here. Otherwise (a sandbox replaced it) every
    mirror's admin directories are searched.
    """
    if not work_tree.is_relative_to(settings.worktrees_dir.resolve()):
        raise _fail(f"{work_tree} is not a Switchboard worktree", Errors.INVALID_INPUT)
    mirrors = settings.mirrors_dir.resolve()
    expected = str(work_tree / ".git")
    candidates: list[Path] = []
    dotgit = work_tree / ".git"
    if dotgit.is_file() and not dotgit.is_symlink():
        hint = dotgit.read_text(errors="replace").strip().removeprefix("gitdir:").strip()
        candidates.append(Path(hint).resolve())
    candidates.extend(p.parent for p in mirrors.glob("*.git/worktrees/*/gitdir"))
    for admin in candidates:
        if admin.is_relative_to(mirrors) and admin.parent.name == "worktrees":
            gitdir = admin / "gitdir"
            if gitdir.is_file() and gitdir.read_text(errors="replace").strip() == expected:
                return admin
    raise _fail(f"no worktree registered at {work_tree} on this host", Errors.REPO_NOT_FOUND)


# ---- merge and diff -----------------------------------------------------------------


def integrate_branches(settings: Settings, input: IntegrateInput) -> MergeOutcome:
    """Merge the subagent branches onto the base in a scratch worktree; never force a conflict."""
    g = _git(_mirror(input.mirror_path))
    path = _task_dir(settings, input.task_id) / INTEGRATION_DIR
    branches = _branches_with_work(g, input.base_commit, input.branches)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A retried attempt may overlap one still running: they would share the scratch worktree.
    with _flock(path.with_name(f"{INTEGRATION_DIR}.lock")):
        result = _merge(g, path, input, branches)
        if not result.merged:
            return MergeOutcome(result=result)
        if input.publish and (input.is_local or input.push):
            _publish(g, input, result)
    assert result.commit is not None
    return MergeOutcome(result=result, stat=diff_stat(g, input.base_commit, result.commit))


def _merge(g: git.Git, path: Path, input: IntegrateInput, branches: list[str]) -> MergeResult:
    _discard_worktree(g, path)
    g.worktree("add", "--quiet", "-B", input.integration_branch, str(path), input.base_commit)
    conflict: MergeResult | None = None
    try:
        wg = _git(path)
        for done, branch in enumerate(branches):
            try:
                wg.merge(
                    "--quiet",
                    "--no-ff",
                    "--no-edit",
                    "--no-verify",
                    "-m",
                    f"Merge {branch}",
                    f"refs/heads/{branch}",
                )
            except git.GitCommandError as err:
                conflict = _abort_merge(wg, err, input.integration_branch, branches[: done + 1])
                break
        head = wg.rev_parse("HEAD")
    finally:
        _discard_worktree(g, path)
    if conflict is not None:
        # Only a clean merge leaves an integration branch behind.
        g.update_ref("-d", f"refs/heads/{input.integration_branch}")
        return conflict
    merged = ", ".join(branches) or "nothing to merge"
    return MergeResult(
        branch=input.integration_branch, merged=True, commit=head, message=f"merged {merged}"
    )


def _abort_merge(
    wg: git.Git, err: git.GitCommandError, integration_branch: str, attempted: list[str]
) -> MergeResult:
    """Undo a failed merge and say which files conflict; a failure that is no conflict raises."""
    conflicts = _split_z(wg.diff("--name-only", "--diff-filter=U", "-z"))
    wg.merge("--abort", with_exceptions=False)
    branch = attempted[-1]
    if not conflicts:
        raise _fail(f"merge of {branch} failed: {_stderr(err)}", Errors.INVALID_INPUT)
    before = f" (merged before it: {', '.join(attempted[:-1])})" if len(attempted) > 1 else ""
    return MergeResult(
        branch=integration_branch,
        merged=False,
        conflicts=conflicts,
        message=f"merge of {branch} conflicts in {', '.join(conflicts)}{before}",
    )


def _branches_with_work(g: git.Git, base: str, branches: list[str]) -> list[str]:
    """The given branches, in order, minus those with no commits beyond `base`."""
    if not branches:
        return []
    refs = [f"refs/heads/{b}" for b in branches]
    fmt = "--format=%(refname)"
    existing = set(g.for_each_ref(fmt, *refs).splitlines())
    if missing := [b for b, r in zip(branches, refs, strict=True) if r not in existing]:
        raise _fail(f"no such branch in the mirror: {', '.join(missing)}", Errors.INVALID_INPUT)
    ahead = set(g.for_each_ref(fmt, f"--no-merged={base}", *refs).splitlines())
    return [b for b, r in zip(branches, refs, strict=True) if r in ahead]


def _publish(g: git.Git, input: IntegrateInput, result: MergeResult) -> None:
    refspec = f"+refs/heads/{input.integration_branch}:refs/heads/{input.target_branch}"
    try:
        g.push("--quiet", "origin", refspec, kill_after_timeout=FETCH_TIMEOUT_SECONDS)
    except git.GitCommandError as err:
        if not input.is_local:
            raise _fail(
                f"push of {input.target_branch} to {input.repo} failed: {_stderr(err)}",
                Errors.REPO_FETCH_FAILED,
                retry=True,
            ) from None
        # Usually the user has that branch checked out: retrying cannot help, and the
        # merge itself is good, so report where it is instead of failing the task.
        result.message = (
            f"merged into {input.integration_branch} in the mirror {input.mirror_path}, but "
            f"writing branch {input.target_branch} to {input.repo} failed: {_stderr(err)}"
        )
        return
    result.branch = input.target_branch
    result.pushed = not input.is_local


def diff_stat(g: git.Git, base: str, head: str) -> DiffStat:
    """Files, insertions and deletions from `base` to `head`, counted as `switchboard.diffs` does.

    A renamed file counts once, under its new name; binary files count 0 lines.
    """
    out: bytes = g.diff("--numstat", "-z", "--no-color", base, head, stdout_as_string=False)
    fields = out.decode("utf-8", errors="replace").split("\0")
    result = DiffStat()
    i = 0
    while i < len(fields):
        entry, i = fields[i], i + 1
        if not entry:
            continue
        added, deleted, name = entry.split("\t", 2)
        if not name:  # a rename: "<old>\0<new>" follow as their own fields
            name, i = fields[i + 1], i + 2
        result.files.append(name)
        result.insertions += int(added) if added.isdigit() else 0
        result.deletions += int(deleted) if deleted.isdigit() else 0
    result.files_changed = len(result.files)
    return result


# ---- cleanup ------------------------------------------------------------------------


def remove_task_worktrees(
    settings: Settings, task_id: str, mirror_path: str | None, delete_branches: bool = False
) -> None:
    """Remove every worktree of a task (and with `delete_branches`, its branches). Idempotent.

    Deleting the directories and pruning once per mirror has the same end state as
    `git worktree remove` per worktree, in one git call instead of one per worktree.
    """
    task_dir = _task_dir(settings, task_id)
    mirrors: set[Path] = set()
    if mirror_path and (Path(mirror_path) / "HEAD").is_file():
        mirrors.add(Path(mirror_path).resolve())
    if task_dir.exists():
        for child in task_dir.iterdir():
            if (mirror := _mirror_of(settings, child)) is not None:
                mirrors.add(mirror)
        _rmtree(task_dir)
    for mirror in mirrors:
        g = _git(mirror)
        g.worktree("prune", with_exceptions=False)
        if delete_branches:
            prefix = f"refs/heads/{BRANCH_PREFIX}{task_id}/"
            names = g.for_each_ref("--format=%(refname:strip=2)", prefix).splitlines()
            if names:
                g.branch("-D", *names, with_exceptions=False)


def reap_orphans(settings: Settings, live_task_ids: set[str]) -> list[str]:
    """Remove worktrees of tasks that are no longer running; returns the task ids reaped."""
    root = settings.worktrees_dir
    if not root.is_dir():
        return []
    reaped = []
    for task_dir in sorted(root.iterdir()):
        if (
            task_dir.is_dir()
            and task_dir.name not in live_task_ids
            and _TASK_ID.match(task_dir.name)
        ):
            remove_task_worktrees(settings, task_dir.name, None)
            reaped.append(task_dir.name)
    return reaped


def _mirror_of(settings: Settings, worktree: Path) -> Path | None:
    """The mirror a worktree belongs to, if its `.git` file points into our mirrors."""
    dotgit = worktree / ".git"
    if not dotgit.is_file():
        return None
    hint = dotgit.read_text(errors="replace").strip().removeprefix("gitdir:").strip()
    mirror = Path(hint).resolve().parent.parent
    if mirror.is_relative_to(settings.mirrors_dir.resolve()) and (mirror / "HEAD").is_file():
        return mirror
    return None


# ---- helpers ------------------------------------------------------------------------


def _git(cwd: Path) -> git.Git:
    g = git.Git(str(cwd))
    g.update_environment(**_GIT_ENV)
    return g


def _mirror(mirror_path: str) -> Path:
    mirror = Path(mirror_path)
    if not ((mirror / "HEAD").is_file() and (mirror / "objects").is_dir()):
        raise _fail(
            f"no repository mirror at {mirror_path} on this host: prepare the repo again",
            Errors.REPO_NOT_FOUND,
        )
    return mirror.resolve()


def _task_dir(settings: Settings, task_id: str) -> Path:
    if not _TASK_ID.match(task_id):
        raise _fail(f"invalid task id {task_id!r}", Errors.INVALID_INPUT)
    return settings.worktrees_dir.resolve() / task_id


def _worktrees(g: git.Git) -> dict[str, dict[str, str]]:
    """`git worktree list --porcelain` as {path: {"HEAD": sha, "branch": ref, "locked": ...}}."""
    entries: dict[str, dict[str, str]] = {}
    for block in g.worktree("list", "--porcelain", "-z").split("\0\0"):
        fields = {key: value for key, _, value in (f.partition(" ") for f in block.split("\0"))}
        if "worktree" in fields:
            entries[fields.pop("worktree")] = fields
    return entries


def _discard_worktree(g: git.Git, path: Path) -> None:
    if path.exists():
        g.worktree("remove", "--force", "--force", str(path), with_exceptions=False)
        _rmtree(path)
    g.worktree("prune", with_exceptions=False)


def _has_ref(g: git.Git, rev: str) -> bool:
    result = g.rev_parse(
        "--verify", "--quiet", rev, with_exceptions=False, with_extended_output=True
    )
    return bool(result[0] == 0)


def _rmtree(path: Path) -> None:
    def make_writable(func: Any, target: str, _exc: Any) -> None:
        # A sandbox may leave read-only directories; a missing entry is already gone.
        for entry in (os.path.dirname(target), target):
            if os.path.isdir(entry) and not os.path.islink(entry):
                os.chmod(entry, os.stat(entry).st_mode | stat.S_IRWXU)
        if os.path.lexists(target):
            func(target)

    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=make_writable)


def _split_z(text: str) -> list[str]:
    return [part for part in text.split("\0") if part]


def _stderr(err: git.GitCommandError) -> str:
    text = str(err.stderr).strip().removeprefix("stderr:").strip().strip("'").strip()
    return text[-STDERR_TAIL_CHARS:] or f"git exited with {err.status}"


def _add_worktree(g: Any, path: Path, *args: str) -> None:
    """`git worktree add`, riding out git's race between concurrent adds.

    Six subagents start at once; a `worktree add` that scans the admin directory
    while another is half-written fails with "failed to read worktrees/<x>/...".
    Nothing was created then: prune and try again.
    """
    for attempt in range(4):
        try:
            g.worktree("add", "--quiet", *args)
            return
        except git.GitCommandError as err:
            if attempt == 3 or "worktrees/" not in _stderr(err):
                raise
            shutil.rmtree(path, ignore_errors=True)
            g.worktree("prune")
            time.sleep(0.05 * (attempt + 1))


def _fail(message: str, kind: str, *, retry: bool = False) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=not retry)


@contextmanager
def _flock(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
