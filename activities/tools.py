"""The tool runner: executes a subagent's already-checked tool calls inside its sandbox.

Every tool, reading ones included, runs as a command in the sandbox, so the
mounts enforce the role a second time after the workflow's capability check. A
failing tool is an outcome the model reads; only a sandbox that cannot run
fails the activity (non-retryable `SandboxUnavailable`).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.sandbox import (
    ExecResult,
    Limit,
    Sandbox,
    SandboxUnavailable,
    WorktreeLimits,
    check_worktree_bounds,
)
from switchboard import metrics
from switchboard.contracts import (
    SandboxInfo,
    SandboxSpec,
    ToolOutcome,
)
from switchboard.models import Role
from switchboard.settings import Settings
from switchboard.tools import CheckedCall, ToolName, safe_relative_path
from switchboard.wire import Errors

MAX_LISTED_FILES = 2_000
QUICK_TOOL_TIMEOUT_SECONDS = 30.0
WRITING_TOOLS = frozenset({ToolName.WRITE_FILE, ToolName.APPLY_PATCH, ToolName.RUN})
"""A worker's calls after which its worktree's disk bounds are checked."""
DISK_LIMIT = "disk"
FILE_TOO_LARGE_EXIT = 128 + signal.SIGXFSZ
"""A shell's exit status for a command killed by RLIMIT_FSIZE."""
"""Listing, reading, searching, writing, patching and diffing: never long."""

LIST_FILES = r"""
if [ ! -e "$1" ]; then echo "no such file or directory: $1" >&2; exit 2; fi
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files --cached --others --exclude-standard -- "$1"
else
  find "$1" -name .git -prune -o -type f -print | sed 's|^\./||'
fi
"""

SEARCH = r"""
if command -v rg >/dev/null 2>&1; then
  exec rg --line-number --no-heading --color never --hidden --glob '!.git' -e "$1" -- "$2"
fi
exec grep -rnIE --exclude-dir=.git -e "$1" -- "$2"
"""

WRITE_FILE = r"""
dir=$(dirname -- "$1") && mkdir -p -- "$dir" && cat > "$1"
"""

APPLY_PATCH = r"""
patch_file=$(mktemp) || exit 2
trap 'rm -f "$patch_file" /tmp/git-apply.err /tmp/patch.out' EXIT
cat > "$patch_file" || exit 2
if git apply --check --recount "$patch_file" 2>/tmp/git-apply.err; then
  git apply --recount --verbose "$patch_file" 2>&1; exit $?
fi
if patch -p1 --forward --batch --dry-run --reject-file=- < "$patch_file" >/tmp/patch.out 2>&1; then
  patch -p1 --forward --batch --no-backup-if-mismatch --reject-file=- < "$patch_file" 2>&1
  exit $?
fi
echo "the patch does not apply; nothing was changed."
echo "--- git apply:"; cat /tmp/git-apply.err
echo "--- patch -p1:"; cat /tmp/patch.out
exit 1
"""

DIFF = r"""
base=$1; shift
git diff --no-color --no-ext-diff "$base" -- "$@" || exit $?
untracked=$(git ls-files --others --exclude-standard -- "$@")
if [ -n "$untracked" ]; then
  printf '\n# untracked files (not in the diff above):\n%s\n' "$untracked"
fi
"""


class ToolActivities:
    """Activities that start sandboxes and run tool calls in them.

    Args:
        settings: limits (`sandbox_command_timeout_seconds`,
            `sandbox_output_limit_bytes`).
        sandbox: the backend, usually from `activities.sandbox.select_backend`.
    """

    def __init__(self, settings: Settings, sandbox: Sandbox) -> None:
        self._settings = settings
        self._sandbox = sandbox
        self._handlers: dict[
            ToolName, Callable[[SandboxSpec, str, dict[str, Any]], Awaitable[ToolOutcome]]
        ] = {
            ToolName.LIST_FILES: self._list_files,
            ToolName.READ_FILE: self._read_file,
            ToolName.SEARCH: self._search,
            ToolName.WRITE_FILE: self._write_file,
            ToolName.APPLY_PATCH: self._apply_patch,
            ToolName.RUN: self._run,
            ToolName.DIFF: self._diff,
        }

    @property
    def settings(self) -> Settings:
        return self._settings

    async def stop_everything(self, sandbox_id: str) -> None:
        """Kill whatever may still run in a sandbox, a dead worker's commands included.

        Raises:
            ApplicationError: `SandboxUnavailable` (non-retryable).
        """
        try:
            await self._sandbox.reap_dead_workers()
            await self._sandbox.stop(sandbox_id)
        except SandboxUnavailable as exc:
            raise _unavailable(exc) from exc

    async def start(self, spec: SandboxSpec) -> SandboxInfo:
        """Start (or find running) a subagent's sandbox, timed in the start metric.

        Raises:
            ApplicationError: `SandboxUnavailable` (non-retryable).
        """
        started = time.monotonic()
        try:
            info = await self._sandbox.start(spec)
        except SandboxUnavailable as exc:
            raise _unavailable(exc) from exc
        metrics.observe(
            activity.metric_meter(),
            metrics.SANDBOX_START,
            time.monotonic() - started,
            backend=self._sandbox.name,
        )
        return info

    async def run_calls(
        self, spec: SandboxSpec, base_commit: str, calls: list[CheckedCall]
    ) -> list[ToolOutcome]:
        """Run checked tool calls in order, counting each by outcome.

        Raises:
            ApplicationError: `SandboxUnavailable` (non-retryable).
        """
        outcomes = []
        meter = activity.metric_meter()
        for call in calls:
            try:
                outcome = await self.run_one(spec, base_commit, call)
            except SandboxUnavailable as exc:
                raise _unavailable(exc) from exc
            result = "ok" if outcome.ok else (outcome.limit or "failed")
            metrics.count(meter, metrics.TOOL_CALLS, tool=outcome.name, outcome=result)
            outcomes.append(outcome)
        return outcomes

    async def run_one(self, spec: SandboxSpec, base_commit: str, call: CheckedCall) -> ToolOutcome:
        """One tool call; failures come back as an outcome with `ok=False`."""
        args = dict(call.arguments)
        if "path" in args and args["path"] is not None:
            safe = safe_relative_path(str(args["path"]))
            if safe is None:
                return ToolOutcome(
                    call_id=call.call_id,
                    name=call.name.value,
                    ok=False,
                    output=f"path {args['path']!r} is outside the repository",
                )
            args["path"] = safe
        if call.name is ToolName.FINISH:
            return ToolOutcome(
                call_id=call.call_id, name=call.name.value, ok=True, output="finished"
            )
        if call.name is ToolName.DIFF:
            args["base_commit"] = base_commit
        outcome = await self._handlers[call.name](spec, call.call_id, args)
        if spec.role is Role.WORKER and call.name in WRITING_TOOLS:
            limits = WorktreeLimits.from_settings(self._settings, spec.mirror_path, base_commit)
            violation = await asyncio.to_thread(check_worktree_bounds, spec.worktree_path, limits)
            if violation is not None:
                outcome.ok, outcome.limit = False, DISK_LIMIT
                outcome.output += (
                    f"\n[disk limit: {violation}. A worktree over the limit is not committed.]"
                )
        return outcome

    # ---- tools ---------------------------------------------------------------------

    async def _list_files(
        self, spec: SandboxSpec, call_id: str, args: dict[str, Any]
    ) -> ToolOutcome:
        result = await self._exec(spec, ["sh", "-c", LIST_FILES, "list_files", args["path"]])
        outcome = self._outcome(call_id, ToolName.LIST_FILES, result)
        lines = outcome.output.splitlines()
        if outcome.ok and len(lines) > MAX_LISTED_FILES:
            shown = "\n".join(lines[:MAX_LISTED_FILES])
            more = len(lines) - MAX_LISTED_FILES
            outcome.output = f"{shown}\n... {more} more files; list a subdirectory"
            outcome.truncated = True
        elif outcome.ok and not lines:
            outcome.output = "(no files)"
        return outcome

    async def _read_file(
        self, spec: SandboxSpec, call_id: str, args: dict[str, Any]
    ) -> ToolOutcome:
        result = await self._exec(spec, ["cat", "--", args["path"]])
        return self._outcome(call_id, ToolName.READ_FILE, result)

    async def _search(self, spec: SandboxSpec, call_id: str, args: dict[str, Any]) -> ToolOutcome:
        argv = ["sh", "-c", SEARCH, "search", args["pattern"], args["path"]]
        result = await self._exec(spec, argv)
        outcome = self._outcome(call_id, ToolName.SEARCH, result)
        if result.exit_code == 1 and not result.stderr.strip():
            outcome.ok, outcome.output = True, "no matches"
        return outcome

    async def _write_file(
        self, spec: SandboxSpec, call_id: str, args: dict[str, Any]
    ) -> ToolOutcome:
        content = str(args["content"]).encode()
        argv = ["sh", "-c", WRITE_FILE, "write_file", args["path"]]
        result = await self._exec(spec, argv, stdin=content)
        outcome = self._outcome(call_id, ToolName.WRITE_FILE, result)
        if outcome.ok:
            outcome.output = f"wrote {len(content)} bytes to {args['path']}"
        return outcome

    async def _apply_patch(
        self, spec: SandboxSpec, call_id: str, args: dict[str, Any]
    ) -> ToolOutcome:
        argv = ["sh", "-c", APPLY_PATCH, "apply_patch"]
        result = await self._exec(spec, argv, stdin=str(args["patch"]).encode(), merge=True)
        outcome = self._outcome(call_id, ToolName.APPLY_PATCH, result)
        if outcome.ok and not outcome.output.strip():
            outcome.output = "patch applied"
        return outcome

    async def _run(self, spec: SandboxSpec, call_id: str, args: dict[str, Any]) -> ToolOutcome:
        timeout = min(float(args.get("timeout_seconds", 60)), self._command_timeout)
        argv = ["sh", "-c", str(args["command"])]
        result = await self._exec(spec, argv, timeout=timeout, merge=True)
        outcome = self._outcome(call_id, ToolName.RUN, result)
        if outcome.limit == Limit.TIMEOUT:
            outcome.output += f"\n[killed: the command ran longer than {timeout:g} s]"
        elif outcome.limit == Limit.OUTPUT and outcome.exit_code is None:
            outcome.output += "\n[killed: the command wrote far more output than is kept]"
        elif outcome.limit == Limit.MEMORY:
            memory = self._settings.sandbox_memory_mb
            outcome.output += f"\n[killed: out of memory, the sandbox has {memory} MB]"
        elif outcome.limit == Limit.PIDS:
            pids = self._settings.sandbox_pids_limit
            outcome.output += f"\n[process limit reached: at most {pids} processes; forks failed]"
        elif outcome.exit_code == FILE_TOO_LARGE_EXIT:
            limit = self._settings.sandbox_file_bytes // (1024 * 1024)
            outcome.output += f"\n[killed: a file grew past {limit} MiB, the limit per file]"
        elif outcome.exit_code not in (0, None):
            outcome.output += f"\n[exit code {outcome.exit_code}]"
        return outcome

    async def _diff(self, spec: SandboxSpec, call_id: str, args: dict[str, Any]) -> ToolOutcome:
        paths = [args["path"]] if args.get("path") else []
        argv = ["sh", "-c", DIFF, "diff", args["base_commit"], *paths]
        result = await self._exec(spec, argv)
        outcome = self._outcome(call_id, ToolName.DIFF, result)
        if outcome.ok and not outcome.output.strip():
            outcome.output = "(no changes)"
        return outcome

    # ---- plumbing ------------------------------------------------------------------

    @property
    def _command_timeout(self) -> float:
        return float(self._settings.sandbox_command_timeout_seconds)

    async def _exec(
        self,
        spec: SandboxSpec,
        argv: list[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        merge: bool = False,
    ) -> ExecResult:
        return await self._sandbox.exec(
            spec,
            argv,
            stdin=stdin,
            timeout=timeout or min(QUICK_TOOL_TIMEOUT_SECONDS, self._command_timeout),
            output_limit=self._settings.sandbox_output_limit_bytes,
            merge_stderr=merge,
        )

    def _outcome(self, call_id: str, name: ToolName, result: ExecResult) -> ToolOutcome:
        output = result.stdout
        if result.stderr.strip():
            output = f"{output}\n{result.stderr}" if output.strip() else result.stderr
        limit = self._settings.sandbox_output_limit_bytes
        truncated = result.truncated
        if len(output) > limit:
            output, truncated = output[:limit], True
        if truncated:
            output += "\n[output truncated]"
        return ToolOutcome(
            call_id=call_id,
            name=name.value,
            ok=result.ok,
            output=output,
            exit_code=result.exit_code,
            truncated=truncated,
            limit=result.limit.value if result.limit else None,
        )


def _unavailable(exc: SandboxUnavailable) -> ApplicationError:
    return ApplicationError(str(exc), type=Errors.SANDBOX_UNAVAILABLE, non_retryable=True)
