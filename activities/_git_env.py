"""How the host runs git on content a subagent wrote: no configuration it controls, confined.

Two layers (docs/security.md, "Host-side git"):

1. Neutralised: every host git call cuts the system and global configuration
   (`GIT_CONFIG_NOSYSTEM`, `GIT_CONFIG_GLOBAL=/dev/null`), so `.gitattributes` in a
   worktree can only name drivers configured in the host-written repository config,
   which has none; hooks, fsmonitor, submodule recursion, external diff and textconv
   are switched off on the command line. Nested repositories in a worktree are
   removed before git looks (`neutralise_nested`), so no configuration a subagent
   wrote is ever read.
2. Confined: the calls that read a worktree (`git add`, `diff`, `commit`) run in a
   bubblewrap sandbox with no network, the host read-only except `/usr`, and only
   the worktree's admin directory and its repository's objects, refs and logs
   writable (a task's own repository: the mirror's objects it borrows stay read-only).
   Where bubblewrap cannot run, layer 1 alone holds (reported by `confinement()`).

Fetch and push talk to the user's remote from the mirror, never read a worktree,
and keep the user's global configuration (credentials, ssh); they still run
without hooks or fsmonitor.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path

import git

_log = logging.getLogger(__name__)

SUBAGENT_NAME = "Switchboard Subagent"
SUBAGENT_EMAIL = "subagent@switchboard.local"

_IDENTITY = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_AUTHOR_NAME": SUBAGENT_NAME,
    "GIT_AUTHOR_EMAIL": SUBAGENT_EMAIL,
    "GIT_COMMITTER_NAME": SUBAGENT_NAME,
    "GIT_COMMITTER_EMAIL": SUBAGENT_EMAIL,
}

# Settings that start a program or recurse into another repository, fixed on every call.
_ALWAYS = (
    ("core.hooksPath", os.devnull),
    ("core.fsmonitor", "false"),
    ("commit.gpgSign", "false"),
    ("tag.gpgSign", "false"),
    ("advice.detachedHead", "false"),
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
)
# Added for every call that reads content a subagent wrote (worktrees, merges, diffs).
_UNTRUSTED = (
    ("submodule.recurse", "false"),
    ("diff.ignoreSubmodules", "all"),
    ("status.submoduleSummary", "false"),
    ("fetch.recurseSubmodules", "false"),
    ("push.recurseSubmodules", "no"),
    ("protocol.file.allow", "never"),
    ("protocol.allow", "never"),
    ("core.sshCommand", "false"),
    ("core.askPass", "false"),
    ("credential.helper", ""),
    ("core.attributesFile", os.devnull),
    ("core.excludesFile", os.devnull),
    ("core.untrackedCache", "false"),
    ("diff.external", ""),
    ("safe.directory", ""),
)


def _config_env(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    env = {"GIT_CONFIG_COUNT": str(len(pairs))}
    for i, (key, value) in enumerate(pairs):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


REMOTE_GIT_ENV = {**_IDENTITY, **_config_env(_ALWAYS)}
"""Fetch and push from a mirror: the user's global configuration stays (credentials)."""

GIT_ENV = {
    **_IDENTITY,
    **_config_env(_ALWAYS + _UNTRUSTED),
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_SYSTEM": os.devnull,
    "GIT_ATTR_NOSYSTEM": "1",
    "HOME": "/nonexistent",
    "XDG_CONFIG_HOME": "/nonexistent",
    "GIT_NO_REPLACE_OBJECTS": "1",
    "GIT_PROTOCOL_FROM_USER": "0",
}
"""Every other host git call: nothing but the host-written repository config is read."""

NO_DRIVERS = ("--no-ext-diff", "--no-textconv", "--ignore-submodules=all")
"""Arguments for every `git diff` the host runs on subagent commits."""


class GitFailed(Exception):
    """A confined git command exited non-zero; `stderr` is git's own words."""

    def __init__(self, args: Sequence[str], status: int, stderr: str) -> None:
        super().__init__(f"git {' '.join(args[:2])} exited with {status}: {stderr}")
        self.status = status
        self.stderr = stderr
        self.merged = 0
        """For `WorktreeGit.merge`: the merges that were done before this one failed."""


@cache
def _bwrap() -> str | None:
    """bubblewrap's path if it can build a sandbox here, else None (checked once)."""
    path = shutil.which("bwrap")
    if path is None:
        _log.warning("no bubblewrap: host-side git on worktrees is neutralised but not confined")
        return None
    probe = subprocess.run(
        [path, *_namespaces(), "--ro-bind", "/", "/", "--", "true"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        _log.warning(
            "bubblewrap cannot run here (%s): host-side git on worktrees is neutralised "
            "but not confined",
            probe.stderr.decode(errors="replace").strip()[:200],
        )
        return None
    return path


def confinement() -> str:
    """How worktree-reading git runs on this host: "bwrap" or "neutralised only"."""
    return "bwrap" if _bwrap() is not None else "neutralised only"


def _namespaces() -> list[str]:
    if os.geteuid() == 0:
        # No user namespace for root: it would hide files a sandbox's mapped uid owns.
        # Every capability is dropped but reading and writing past file modes.
        ns = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        ns += ["--unshare-cgroup-try", "--cap-drop", "ALL", "--cap-add", "CAP_DAC_OVERRIDE"]
        return ns
    return ["--unshare-all", "--cap-drop", "ALL"]


def _sandbox(
    bwrap: str,
    cwd: Path,
    readable: Iterable[Path],
    writable: Iterable[Path],
    env: Mapping[str, str] = GIT_ENV,
) -> list[str]:
    bw = [bwrap, *_namespaces(), "--die-with-parent", "--new-session", "--clearenv"]
    for key, value in {**env, "PATH": "/usr/bin:/bin"}.items():
        bw += ["--setenv", key, value]
    bw += ["--ro-bind", "/usr", "/usr"]
    for system in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(system):
            bw += ["--symlink", os.readlink(system), system]
        elif os.path.isdir(system):
            bw += ["--ro-bind", system, system]
    bw += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for path in readable:
        bw += ["--ro-bind", str(path), str(path)]
    for path in writable:
        if path.exists():
            bw += ["--bind", str(path), str(path)]
    return [*bw, "--remount-ro", "/", "--chdir", str(cwd), "--"]


def confined_prefix(
    cwd: Path, readable: Iterable[Path], writable: Iterable[Path], env: Mapping[str, str]
) -> list[str]:
    """The bubblewrap argv that runs a command seeing only `readable` (read-only) and
    `writable` of the host, with exactly `env`; [] where bubblewrap cannot run (the
    caller then runs the command neutralised only, with the same `env`)."""
    bwrap = _bwrap()
    return _sandbox(bwrap, cwd, readable, writable, env) if bwrap else []


def add_worktree(repo: Path, path: Path, args: Sequence[str]) -> None:
    """`git worktree add ARGS` on `repo`, confined: it checks out committed content a
    subagent wrote (its branch, a merge base), so it runs like the commit does, with
    only the repository's `worktrees`, `refs` and `logs` and the new worktree's parent
    directory writable.

    Raises:
        git.GitCommandError: git failed (its stderr, as GitPython would report it).
    """
    (repo / "worktrees").mkdir(exist_ok=True)
    (repo / "logs").mkdir(exist_ok=True)
    readable = [repo, *borrowed_objects(repo)]
    writable = [repo / "worktrees", repo / "refs", repo / "logs", path.parent]
    prefix = confined_prefix(repo, readable, writable, GIT_ENV)
    argv = ["git", "worktree", "add", *args]
    env = None if prefix else {"PATH": os.environ.get("PATH", ""), **GIT_ENV}
    done = subprocess.run(
        [*prefix, *argv], cwd=repo, env=env, capture_output=True, timeout=600, check=False
    )
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace")
        raise git.GitCommandError(argv, done.returncode, stderr)


def borrowed_objects(repo: Path) -> list[Path]:
    """The object stores a repository borrows through `objects/info/alternates`
    (a task's repository borrows its mirror's, `activities._task_repo`)."""
    alternates = repo / "objects" / "info" / "alternates"
    if not alternates.is_file():
        return []
    found = []
    for line in alternates.read_text(errors="replace").splitlines():
        if line.strip() and not line.startswith("#"):
            target = (repo / "objects" / line.strip()).resolve()  # relative: from objects/
            if target.is_dir():
                found.append(target)
    return found


class WorktreeGit:
    """git on one worktree, run as `git --git-dir=<admin> --work-tree=<worktree>`.

    The worktree's own `.git` is never read: the admin directory inside the mirror is
    given explicitly. Under bubblewrap only the admin directory and the mirror's
    objects, refs and logs are writable; the worktree itself is read-only.
    """

    def __init__(
        self,
        work_tree: Path,
        admin: Path,
        mirror: Path,
        *,
        write_tree: bool = False,
        excludes: Path | None = None,
    ) -> None:
        self.work_tree = work_tree
        self._base = ["git", f"--git-dir={admin}", f"--work-tree={work_tree}"]
        readable = [mirror, *borrowed_objects(mirror), work_tree]  # read-only: the upstream's
        if excludes is not None:  # the host's own ignore list (`activities._excludes`)
            self._base[1:1] = ["-c", f"core.excludesFile={excludes}"]
            readable.append(excludes)
        bwrap = _bwrap()
        writable = [admin, mirror / "objects", mirror / "refs", mirror / "logs"]
        if write_tree:  # a merge writes its result into the (host-made) worktree
            writable.append(work_tree)
        (mirror / "logs").mkdir(exist_ok=True)  # a bind needs it to exist beforehand
        self._prefix = _sandbox(bwrap, work_tree, readable, writable) if bwrap else []

    def run(self, *args: str, ok: Sequence[int] = (0,)) -> tuple[int, bytes]:
        """(exit status, stdout); raises `GitFailed` for a status not in `ok`."""
        return self._exec([*self._base, *args], args, ok)

    def commit(self, message: str, base: str) -> tuple[bool, str, bytes]:
        """`add --all`, a commit if anything is staged, then (committed, HEAD, numstat
        from `base`): one sandbox for the four git commands, not four."""
        argv = ["sh", "-c", _COMMIT_SCRIPT, "sh", message, base, *self._base[1:]]
        out = self._exec(argv, ("commit",), (0,))[1]
        committed, head, numstat = [*out.split(b"\n", 2), b"", b""][:3]
        return committed == b"1", head.decode().strip(), numstat

    def merge(self, branches: Sequence[str]) -> tuple[str, GitFailed | None]:
        """Merge `branches` in order, stopping at the first that fails: (HEAD, None), or
        ("", the failed merge's error), the merges before it done (`GitFailed.merged`
        says how many). One sandbox for all of them, not one per merge (B1)."""
        if any("\n" in b for b in branches):  # a ref name holds no newline
            raise ValueError(f"not a branch name: {branches!r}")
        argv = ["sh", "-c", _MERGE_SCRIPT, "sh", "\n".join(branches), *self._base[1:]]
        ran = self._spawn(argv)
        stderr = ran.stderr.decode(errors="replace").strip()
        if ran.returncode != 0:
            raise GitFailed(("merge",), ran.returncode, stderr)
        report = ran.stdout.decode(errors="replace").strip()
        if not report.startswith("failed "):
            return report, None
        _, done, code = report.split()
        error = GitFailed(("merge", branches[int(done)]), int(code), stderr)
        error.merged = int(done)
        return "", error

    def _exec(self, argv: list[str], args: Sequence[str], ok: Sequence[int]) -> tuple[int, bytes]:
        done = self._spawn(argv)
        if done.returncode not in ok:
            raise GitFailed(args, done.returncode, done.stderr.decode(errors="replace").strip())
        return done.returncode, done.stdout

    def _spawn(self, argv: list[str]) -> subprocess.CompletedProcess[bytes]:
        env = None if self._prefix else {"PATH": os.environ.get("PATH", ""), **GIT_ENV}
        return subprocess.run(
            [*self._prefix, *argv],
            cwd=self.work_tree,
            env=env,
            capture_output=True,
            timeout=600,
            check=False,
        )


# $1 the message, $2 the base commit, then git's own options (`--git-dir`, ...).
# `diff --cached --quiet` exits 1 for "staged changes"; any other failure ends it.
_COMMIT_SCRIPT = """set -e
message=$1 base=$2
shift 2
git "$@" add --all
if git "$@" diff --cached --quiet --no-ext-diff --no-textconv --ignore-submodules=all; then
  echo 0
else
  status=$?
  [ "$status" -eq 1 ] || exit "$status"
  git "$@" commit --quiet --no-verify -m "$message"
  echo 1
fi
git "$@" rev-parse HEAD
git "$@" diff --numstat -z --no-color --no-ext-diff --no-textconv --ignore-submodules=all \\
  "$base" HEAD
"""


# $1 the branches, one a line; then git's own options. The merges are the ones the
# host ran in a sandbox each before; the first that fails ends the run, printing
# "failed <merges done before it> <its status>", else HEAD (what the merges print goes
# to stderr). A ref name has no newline or glob character (git check-ref-format), so
# the list splits on newlines only, with globbing off.
_MERGE_SCRIPT = """set -u -f
IFS='
'
branches=$1
shift
merged=0
for branch in $branches; do
  git "$@" merge --quiet --no-ff --no-edit --no-verify -m "Merge $branch" \\
    "refs/heads/$branch" >&2 || { status=$?; echo "failed $merged $status"; exit 0; }
  merged=$((merged + 1))
done
git "$@" rev-parse HEAD
"""
