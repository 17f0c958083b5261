"""Activity inputs and outputs: the typed seam between workflows and side effects.

Workflows import these (pure pydantic) and the names in `switchboard.wire`; the
implementations live in `activities/`. Large things (transcripts, diffs, file
contents) stay on disk or in git and are referenced, not carried (claim check).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from switchboard.models import (
    Budget,
    DiffStat,
    MergeResult,
    Model,
    Role,
    SubagentState,
    SubtaskSpec,
)
from switchboard.tools import CheckedCall, DeniedCall

# ---- repository ------------------------------------------------------------------


class PrepareRepoInput(Model):
    repo: str
    base_ref: str | None = None
    task_id: str | None = None
    """When set, `PreparedRepo.mirror_path` is this task's own repository (borrowing
    the mirror's objects), where its branches and worktrees live."""
    credential_ref: str | None = None
    """`TaskRequest.credential_ref`: the fetch's credentials, resolved on the host."""


class PreparedRepo(Model):
    """A cached bare mirror of the target repo on one host."""

    repo: str
    mirror_path: str
    base_ref: str
    base_commit: str
    is_local: bool
    host_queue: str
    """Queue of the host holding the mirror; worktree activities must go there."""


class WorktreeInput(Model):
    task_id: str
    index: int
    mirror_path: str
    base_commit: str
    branch: str
    fresh: bool = False
    """Discard what an earlier run left in the worktree (uncommitted work of a failed
    run): the worktree is rebuilt from its branch, i.e. the subagent's committed work."""


class WorktreeInfo(Model):
    path: str
    branch: str
    head: str


class CommitInput(Model):
    worktree_path: str
    base_commit: str
    message: str


class CommitResult(Model):
    head: str
    committed: bool
    diff_stat: DiffStat
    notes: list[str] = Field(default_factory=list)
    """What the host changed before committing (nested repositories made plain files)."""


class FinishSubagentInput(Model):
    """A subagent's ending on its host: commit its work (workers), stop its sandbox."""

    sandbox_id: str
    commit: CommitInput | None = None


class FinishSubagentResult(Model):
    commit: CommitResult | None = None


class IntegrateInput(Model):
    """Merge subagent branches onto the base in the mirror.

    With `publish`, the result is also made the branch `target_branch` of the
    user's repo (a local path), or pushed to a remote when `push` is set.
    """

    task_id: str
    repo: str
    mirror_path: str
    base_commit: str
    branches: list[str]
    credential_ref: str | None = None
    integration_branch: str
    target_branch: str
    is_local: bool
    publish: bool = False
    push: bool = False


class TargetInput(Model):
    """Compare a task's change with its target branch's current tip (`TargetCheck`)."""

    task_id: str
    repo: str
    mirror_path: str
    credential_ref: str | None = None
    branch: str
    """The target branch (the task's base ref)."""
    base_commit: str
    """What the change is based on."""
    change_commit: str | None = None
    """The combined change, checked for conflicts with the tip (None: none to check)."""


class CleanupInput(Model):
    task_id: str
    mirror_path: str | None = None
    delete_branches: bool = False


class GcMirrorsInput(Model):
    """One host's mirror maintenance: `git gc`, keeping unreachable objects this young."""

    host_queue: str
    prune_hours: int = Field(default=24, ge=1)


class GcMirrorsResult(Model):
    mirrors: int = 0
    """Mirrors collected."""
    failed: list[str] = Field(default_factory=list)
    """Mirrors whose gc failed (with git's words), left for the next run."""
    bytes_before: int = 0
    bytes_after: int = 0
    task_repos_removed: int = 0
    """Repositories of tasks that ended more than `task_retention_hours` ago."""
    credentials_removed: int = 0
    """Stored credentials no task held, older than the retention."""


# ---- planning and model turns -------------------------------------------------------


BAD_PLAN_ATTEMPTS = 3
"""Tries for a usable plan (`plan_subtasks` stops retrying after this many bad ones);
outages (429, 5xx, timeouts) get the transient retry policy instead."""


class PlanInput(Model):
    task_id: str
    goal: str
    repo: str
    max_subtasks: int = 6


class Plan(Model):
    subtasks: list[SubtaskSpec]
    tokens: int = 0


class ChatToolCall(Model):
    id: str
    name: str
    arguments: str = ""
    """Raw JSON as the model wrote it; parsed and checked in the workflow."""


class ChatMessage(Model):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ChatToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None


class LlmTurnInput(Model):
    """One model call of a subagent.

    The transcript lives in a file on the worker host (`transcript_id`); the
    activity truncates it to `expected_length` before appending `new_messages`,
    so a retried activity sends exactly what the first attempt sent.
    """

    transcript_id: str
    call_id: str
    role: Role
    expected_length: int
    new_messages: list[ChatMessage]
    task_id: str = ""
    subagent: int = 0


class Usage(Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class LlmTurnResult(Model):
    content: str | None = None
    tool_calls: list[ChatToolCall] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    finish_reason: str | None = None
    transcript_length: int


# ---- sandbox and tools --------------------------------------------------------------


class SandboxSpec(Model):
    sandbox_id: str
    worktree_path: str
    role: Role
    mirror_path: str | None = None
    """Mounted read-only so `git` works inside the worktree."""


class SandboxInfo(Model):
    sandbox_id: str
    backend: str


class ToolOutcome(Model):
    call_id: str
    name: str
    ok: bool
    output: str
    exit_code: int | None = None
    truncated: bool = False
    limit: str | None = None
    """Which limit stopped the command, if one did: "timeout", "output", ..."""


class StepInput(Model):
    """One subagent step: a model turn, then the tool calls it asked for."""

    turn: LlmTurnInput
    sandbox: SandboxSpec
    base_commit: str
    start_sandbox: bool = False
    """Start the sandbox first (a run's first step; idempotent when it runs)."""


class StepResult(Model):
    """What one step did: the model's turn and how each of its tool calls ended.

    Every call of `turn.tool_calls` is in exactly one of `denied`, `outcomes`, or
    is `finish`.
    """

    turn: LlmTurnResult
    denied: list[DeniedCall] = Field(default_factory=list)
    outcomes: list[ToolOutcome] = Field(default_factory=list)
    finish: CheckedCall | None = None


class MergeOutcome(Model):
    result: MergeResult
    stat: DiffStat = Field(default_factory=DiffStat)


class Progress(Model):
    """A subagent's report to its task (signal payload)."""

    index: int
    kind: str
    message: str
    steps: int = 0
    tokens: int = 0
    tool_calls: int = 0
    denied_calls: int = 0
    data: dict[str, Any] = Field(default_factory=dict)


# ---- child workflow ---------------------------------------------------------------


class SubagentInput(Model):
    task_id: str
    index: int
    round: int = 1
    goal: str
    subtask: SubtaskSpec
    prepared: PreparedRepo
    branch: str
    start_commit: str
    """Where the worktree branch starts (the task's base, or the merged result for review)."""
    budget: Budget
    feedback: str | None = None
    review_titles: list[str] = Field(default_factory=list)
    guidance: list[str] = Field(default_factory=list)
    history_limit: int = Field(default=4_000, ge=50)
    """Continue-as-new once the run's history reaches this many events."""
    resume: SubagentCheckpoint | None = None
    """Set by continue-as-new: where the previous run stopped."""
    fresh: bool = False
    """A retry of a failed run: rebuild the worktree from the branch (`WorktreeInput.fresh`)."""


class SubagentResult(Model):
    index: int
    state: SubagentState
    branch: str
    steps: int = 0
    tokens: int = 0
    tool_calls: int = 0
    denied_calls: int = 0
    summary: str = ""
    verdict: str | None = None
    head: str | None = None
    diff_stat: DiffStat | None = None
    error: str | None = None


class SubagentCheckpoint(Model):
    """What a subagent carries into its next run when it continues-as-new."""

    result: SubagentResult
    worktree_path: str
    transcript_length: int
    pending: list[ChatMessage] = Field(default_factory=list)
    nudged: bool = False
    started_at: datetime
    runs: int = 1


SubagentInput.model_rebuild()
