"""Domain models: what a task, a subtask, a subagent, an approval and an event are.

Every workflow, update, signal and query takes one of these and returns one, so a
field added later never breaks a running history (new fields get defaults).
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from switchboard.identity import Claimed, TaskPolicy

MAX_GOAL_CHARS = 20_000
MAX_SUBTASKS = 24
MAX_PARALLEL = 16
DEFAULT_PARALLEL = 6
TOOL_LOG_KEEP = 10
TOOL_EXCERPT_CHARS = 400


class Model(BaseModel):
    """Base for boundary types: unknown fields are refused, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class Role(StrEnum):
    """What a subagent may do; the tools of each are `switchboard.tools.CAPABILITIES`."""

    EXPLORER = "explorer"
    WORKER = "worker"
    REVIEWER = "reviewer"


class Phase(StrEnum):
    PREPARING = "preparing"
    PLANNING = "planning"
    RUNNING = "running"
    REVIEWING = "reviewing"
    AWAITING_APPROVAL = "awaiting_approval"
    MERGING = "merging"
    COMPLETED = "completed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in FINAL_PHASES


FINAL_PHASES = frozenset({Phase.COMPLETED, Phase.REJECTED, Phase.CANCELLED, Phase.FAILED})


class SubtaskSpec(Model):
    title: str = Field(min_length=1, max_length=200)
    instructions: str = Field(default="", max_length=MAX_GOAL_CHARS)
    role: Role = Role.WORKER


class Budget(Model):
    """Limits for one subagent run; the first one reached ends the run."""

    max_steps: int = Field(default=20, ge=1, le=500)
    max_tokens: int = Field(default=200_000, ge=100, le=10_000_000)
    max_wall_seconds: int = Field(default=1800, ge=10, le=7 * 24 * 3600)


class TaskSpec(Model):
    """What a task is to do; a `TaskRequest` adds who asks (the API's body is this)."""

    goal: str = Field(min_length=1, max_length=MAX_GOAL_CHARS)
    repo: str = Field(min_length=1, max_length=2000, description="Local path or git URL.")
    base_ref: str | None = Field(default=None, max_length=250)
    subtasks: list[SubtaskSpec] = Field(default_factory=list, max_length=MAX_SUBTASKS)
    max_parallel: int = Field(default=DEFAULT_PARALLEL, ge=1, le=MAX_PARALLEL)
    push: bool = False
    review: bool = True
    request_id: str | None = Field(
        default=None,
        max_length=200,
        description="Client idempotency key: the same id starts the task once.",
    )
    budget: Budget = Field(default_factory=Budget)

    @field_validator("goal")
    @classmethod
    def _goal_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("goal must not be blank")
        return value

    @field_validator("repo", "request_id")
    @classmethod
    def _no_control_chars(cls, value: str | None) -> str | None:
        if value is not None and _CONTROL_CHARS.search(value):
            raise ValueError("must not hold control characters (NUL, newline, escape...)")
        return value

    @field_validator("base_ref")
    @classmethod
    def _base_ref_is_a_ref(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _REF_NAME.fullmatch(value.strip()):
            raise ValueError(
                "must be a branch, tag or commit: letters, digits and ./_-+@^~{} only, "
                "not starting with '-'"
            )
        return value.strip()


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# Deliberately narrower than git's ref rules: no spaces, control characters, ':' or
# '\\', never an option. git itself refuses the rest when it resolves the ref.
_REF_NAME = re.compile(r"[A-Za-z0-9._/@^~{}+][A-Za-z0-9._/@^~{}+-]{0,249}")


class TaskRequest(TaskSpec):
    """What a user asks for when delegating a task."""

    owner: str = Field(default="local", min_length=1, max_length=200)
    credential_ref: str | None = Field(default=None, max_length=64)
    """Set by the server when `repo` carried credentials (`switchboard.credentials`):
    `repo` then holds the URL without them. Whatever a caller sends is replaced."""
    policy: TaskPolicy | None = None
    """Who may decide it, from the verified submitter (None: the workflow checks none)."""


class DiffStat(Model):
    files_changed: int = 0
    insertions: int = 0
    deletions: int = 0
    files: list[str] = Field(default_factory=list)


class SubagentState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    BUDGET_EXHAUSTED = "budget_exhausted"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ToolLog(Model):
    """One tool call of a subagent: how it ended and a bounded excerpt of its output
    (control characters made visible; the full output is in the transcript)."""

    step: int
    tool: str
    ok: bool
    exit_code: int | None = None
    limit: str | None = None
    excerpt: str = ""


class SubagentStatus(Model):
    index: int
    title: str
    role: Role
    state: SubagentState = SubagentState.PENDING
    branch: str = ""
    round: int = 1
    steps: int = 0
    tokens: int = 0
    tool_calls: int = 0
    denied_calls: int = 0
    summary: str = ""
    diff_stat: DiffStat | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    tools: list[ToolLog] = Field(default_factory=list)
    """Its last tool calls (at most `TOOL_LOG_KEEP`), newest last."""
    waiting: str | None = None
    """What its running step waits on, with the time so far ("waiting on the model for
    42 s"); filled in by `TaskService.status` from the step's heartbeat, not by the task."""


class ReviewVerdict(Model):
    verdict: Literal["approve", "request_changes"]
    comments: str = ""


class ApprovalRecord(Model):
    decision: Literal["approved", "changes_requested", "rejected"]
    by: str
    at: datetime
    comment: str = ""
    round: int = 1


class MergeResult(Model):
    branch: str
    merged: bool
    commit: str | None = None
    conflicts: list[str] = Field(default_factory=list)
    pushed: bool = False
    message: str = ""


class TargetCheck(Model):
    """The task's change against its target branch's tip, as of `checked_at` (the gate
    checks before parking, the merge again before publishing)."""

    branch: str
    """The target branch: the base the task started from (`TaskRequest.base_ref`)."""
    base_commit: str
    """What the change is based on now (the target's tip after a rebase round)."""
    tip: str | None = None
    """The target's tip in the user's repository; None when the base is no branch."""
    behind: int = 0
    """Commits on the target that the change is not based on."""
    conflicts: list[str] = Field(default_factory=list)
    """Files in which the change conflicts with the tip (a merge onto it would stop)."""
    checked_at: datetime
    message: str = ""


class TaskStatus(Model):
    task_id: str
    goal: str
    repo: str
    owner: str
    phase: Phase
    round: int = 1
    subagents: list[SubagentStatus] = Field(default_factory=list)
    review: ReviewVerdict | None = None
    diff_stat: DiffStat | None = None
    approvals: list[ApprovalRecord] = Field(default_factory=list)
    merge: MergeResult | None = None
    error: str | None = None
    partial: list[int] = Field(default_factory=list)
    """Workers that failed this round: a plain approve is refused until the caller
    drops them (`ApproveInput.drop_failed`) or retries them (request changes)."""
    published: str | None = None
    """The branch published to the user's repository, once it was (also on a cancel)."""
    target: TargetCheck | None = None
    """How the change stands against the target branch's tip (behind by N, conflicts)."""
    created_at: datetime
    updated_at: datetime
    next_offset: int = 0


class TaskResult(Model):
    task_id: str
    phase: Phase
    merge: MergeResult | None = None
    error: str | None = None
    subagents: list[SubagentStatus] = Field(default_factory=list)


class TaskSummary(Model):
    """One row of `task list`, read from visibility (search attributes)."""

    task_id: str
    phase: str
    owner: str
    repo: str
    status: str
    started_at: datetime | None = None


# ---- events ------------------------------------------------------------------


class EventKind(StrEnum):
    PHASE = "phase"
    PLAN = "plan"
    SUBAGENT_STARTED = "subagent_started"
    SUBAGENT_STEP = "subagent_step"
    SUBAGENT_WAITING = "subagent_waiting"
    TOOL_DENIED = "tool_denied"
    SUBAGENT_FINISHED = "subagent_finished"
    STEERED = "steered"
    DIFF_READY = "diff_ready"
    REVIEW = "review"
    APPROVAL_NEEDED = "approval_needed"
    APPROVED = "approved"
    CHANGES_REQUESTED = "changes_requested"
    REJECTED = "rejected"
    MERGED = "merged"
    MERGE_CONFLICT = "merge_conflict"
    TARGET_MOVED = "target_moved"
    CANCELLED = "cancelled"
    FAILED = "failed"
    COMPLETED = "completed"
    GAP = "gap"


class TaskEvent(Model):
    offset: int
    at: datetime
    kind: EventKind
    message: str
    phase: Phase | None = None
    subagent: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class FollowNoticeKind(StrEnum):
    WORKER_UNAVAILABLE = "worker_unavailable"
    WORKER_BACK = "worker_back"


class FollowNotice(Model):
    """What a follower of a task's events says about the following itself, not the task.

    Not a task event: it has no offset, is not recorded and is not replayed. Sent
    once when the task's events stop being readable (no worker answers, Temporal
    unreachable) and once when they are again, so a client can tell a quiet
    stream from a stalled one; the stream itself stays open until the task ends.
    """

    kind: FollowNoticeKind
    at: datetime
    message: str


class EventsRequest(Model):
    from_offset: int = Field(default=0, ge=0)
    limit: int = Field(default=500, ge=1, le=2000)


class EventsPage(Model):
    events: list[TaskEvent]
    next_offset: int
    first_offset: int = 0
    final: bool = False


# ---- human decisions (update / signal inputs) -----------------------------------


class ApproveInput(Claimed):
    comment: str = Field(default="", max_length=10_000)
    drop_failed: bool = False
    """Approve a partial result: merge the workers that succeeded, drop the failed ones."""


class RequestChangesInput(Claimed):
    feedback: str = Field(max_length=MAX_GOAL_CHARS)
    only_failed: bool = False
    """Retry only the workers that failed (feedback may then be empty)."""
    rebase: bool = False
    """Rebase the change onto the target branch's new tip, review it again and park
    again; no worker runs (feedback may then be empty). Refused on a conflict."""


class RejectInput(Claimed):
    comment: str = Field(default="", max_length=10_000)


class SteerInput(Claimed):
    guidance: str = Field(min_length=1, max_length=MAX_GOAL_CHARS)
    steer_id: str | None = Field(default=None, max_length=64)
    """Set by the service: applied once by the task, covered by a signed claim."""


class DiffRequest(Model):
    subagent: int | None = None


class DiffView(Model):
    """A diff read from git (claim check): never stored in workflow history."""

    task_id: str
    subagent: int | None = None
    base_commit: str
    stat: DiffStat
    patch: str
    truncated: bool = False


class DiffLocation(Model):
    """Where a task's diff lives (answer of the `diff` query): read it from git.

    Diffs are never carried through workflow history; readers take them from
    the mirror on the worker host with `switchboard.diffs.read_diff`.
    """

    task_id: str
    subagent: int | None = None
    mirror_path: str | None = None
    base_commit: str | None = None
    ref: str | None = None


class TaskSubmitted(Model):
    task_id: str
    created: bool
    """False when the request id matched a task already started (idempotent submit)."""
    notice: str | None = None
    """What the server changed in the request and why (a tenant limit), if anything."""
