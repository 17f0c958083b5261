"""The conversation model's tools as the model sees them: names, argument models and
schemas, and the one-glance status text `task_status` answers with."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, Field, model_validator

from switchboard.models import (
    MAX_GOAL_CHARS,
    MAX_PARALLEL,
    MAX_SUBTASKS,
    Model,
    SubtaskSpec,
    TaskStatus,
)

__all__ = [
    "ARGS",
    "TOOL_SCHEMAS",
    "ApproveArgs",
    "DelegateTaskArgs",
    "ListTasksArgs",
    "RejectArgs",
    "RequestChangesArgs",
    "ShowDiffArgs",
    "SteerArgs",
    "TaskArgs",
    "ToolArgs",
    "ToolName",
    "describe_status",
]


class ToolName(StrEnum):
    DELEGATE_TASK = "delegate_task"
    LIST_TASKS = "list_tasks"
    TASK_STATUS = "task_status"
    SHOW_DIFF = "show_diff"
    STEER_TASK = "steer_task"
    APPROVE_TASK = "approve_task"
    REQUEST_CHANGES = "request_changes"
    REJECT_TASK = "reject_task"
    CANCEL_TASK = "cancel_task"


class ToolArgs(Model):
    """Tool arguments: unknown fields are refused, so a typo is reported, not ignored."""


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Text = Annotated[str, AfterValidator(_not_blank)]


class DelegateTaskArgs(ToolArgs):
    goal: Text = Field(min_length=1, max_length=MAX_GOAL_CHARS, description="What to achieve.")
    repo: str | None = Field(
        default=None,
        max_length=2000,
        description="Local path or git URL; the session's repository when omitted.",
    )
    subtasks: list[SubtaskSpec] = Field(
        default_factory=list,
        max_length=MAX_SUBTASKS,
        description="Optional split into subtasks; planned automatically when omitted.",
    )
    max_parallel: int | None = Field(default=None, ge=1, le=MAX_PARALLEL)
    review: bool = Field(default=True, description="Have a reviewer read the diff first.")


class ListTasksArgs(ToolArgs):
    pass


class TaskArgs(ToolArgs):
    task_id: str | None = Field(
        default=None,
        max_length=100,
        description="The task; this session's only fitting task when omitted.",
    )


class ShowDiffArgs(TaskArgs):
    subagent: int | None = Field(default=None, ge=1, description="One subagent's diff only.")


class SteerArgs(TaskArgs):
    guidance: Text = Field(min_length=1, max_length=MAX_GOAL_CHARS)


class ApproveArgs(TaskArgs):
    comment: str = Field(default="", max_length=10_000)


class RequestChangesArgs(TaskArgs):
    feedback: str = Field(default="", max_length=MAX_GOAL_CHARS, description="What should change.")
    rebase: bool = Field(
        default=False,
        description="The target branch moved: rebase the change onto its tip and review "
        "it again; no worker runs, feedback may be empty. Refused on a conflict.",
    )

    @model_validator(mode="after")
    def _feedback_unless_rebase(self) -> RequestChangesArgs:
        # The API's rule (api.schemas.RequestChangesBody): only a rebase needs no feedback.
        if not self.feedback.strip() and not self.rebase:
            raise ValueError("feedback must not be blank: say what should change, or rebase")
        return self


class RejectArgs(TaskArgs):
    comment: str = Field(default="", max_length=10_000)


ARGS: dict[ToolName, type[ToolArgs]] = {
    ToolName.DELEGATE_TASK: DelegateTaskArgs,
    ToolName.LIST_TASKS: ListTasksArgs,
    ToolName.TASK_STATUS: TaskArgs,
    ToolName.SHOW_DIFF: ShowDiffArgs,
    ToolName.STEER_TASK: SteerArgs,
    ToolName.APPROVE_TASK: ApproveArgs,
    ToolName.REQUEST_CHANGES: RequestChangesArgs,
    ToolName.REJECT_TASK: RejectArgs,
    ToolName.CANCEL_TASK: TaskArgs,
}

_DESCRIPTIONS: dict[ToolName, str] = {
    ToolName.DELEGATE_TASK: "Start a coding task run by sandboxed subagents. Returns at once "
    "with the task id; its progress is posted into this conversation as it happens.",
    ToolName.LIST_TASKS: "List this session's tasks with their phase.",
    ToolName.TASK_STATUS: "A task's live status: phase, subagents and their progress, review.",
    ToolName.SHOW_DIFF: "The task's combined diff (ready once the task reports diff_ready).",
    ToolName.STEER_TASK: "Give a running task's subagents new guidance (reaches them at their "
    "next step).",
    ToolName.APPROVE_TASK: "Approve a task waiting for approval; it merges. Only when the user "
    "says so.",
    ToolName.REQUEST_CHANGES: "Send a task waiting for approval back to work with feedback; "
    "or, with rebase (when the target branch moved), move the change onto its tip.",
    ToolName.REJECT_TASK: "Reject a task waiting for approval; it ends without merging.",
    ToolName.CANCEL_TASK: "Stop a task; it cleans up and ends as cancelled.",
}


def _schema(name: ToolName) -> dict[str, Any]:
    parameters = ARGS[name].model_json_schema()
    parameters.pop("title", None)
    return {
        "type": "function",
        "function": {
            "name": name.value,
            "description": _DESCRIPTIONS[name],
            "parameters": parameters,
        },
    }


TOOL_SCHEMAS: list[dict[str, Any]] = [_schema(name) for name in ToolName]
"""The OpenAI `tools` parameter of every conversation turn."""


def describe_status(status: TaskStatus) -> str:
    """A task's status in a few lines a model (or a person) reads at a glance."""
    lines = [
        f"{status.task_id} · {status.phase.value} · round {status.round} · {status.goal[:200]}"
    ]
    for sub in status.subagents:
        lines.append(
            f"  #{sub.index} {sub.role.value} {sub.state.value}: {sub.title} "
            f"({sub.steps} steps, {sub.tokens} tokens)" + (f" — {sub.error}" if sub.error else "")
        )
    if status.diff_stat is not None:
        d = status.diff_stat
        lines.append(f"  diff: {d.files_changed} files, +{d.insertions} -{d.deletions}")
    if status.review is not None:
        lines.append(f"  review: {status.review.verdict} — {status.review.comments[:300]}")
    if status.merge is not None:
        m = status.merge
        lines.append(
            f"  merge: {'merged into ' + m.branch if m.merged else 'not merged'} {m.message}"
        )
    if status.error:
        lines.append(f"  error: {status.error}")
    return "\n".join(lines)
