"""The conversation model's tools: their schemas, argument checks and execution.

Every tool becomes one or two Temporal calls through `TaskService` (a start, a
query, an update or a signal) and returns at once: nothing here waits on a
task's progress. Arguments are validated with pydantic; a bad argument, an
unknown task or a refused decision comes back to the model as an error result
it can read and correct, never as an exception out of the turn.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationError

from switchboard.contracts import ChatToolCall
from switchboard.conversation import MAX_ENTRY_CHARS, SessionTask
from switchboard.errors import ServiceError, TaskNotFound
from switchboard.frontends import repo_from_words
from switchboard.identity import Action, Identity
from switchboard.models import (
    MAX_GOAL_CHARS,
    MAX_PARALLEL,
    MAX_SUBTASKS,
    ApproveInput,
    Model,
    Phase,
    RejectInput,
    RequestChangesInput,
    SteerInput,
    SubtaskSpec,
    TaskRequest,
    TaskStatus,
)
from switchboard.service import TaskService

__all__ = ["TOOL_SCHEMAS", "ToolName", "ToolOutcome", "ToolScope", "run_tool"]

log = logging.getLogger(__name__)

DIFF_CHARS = 8_000
"""The patch a `show_diff` result quotes; the rest stays in git (and the web diff view)."""
LIST_LIMIT = 20


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


class _Args(Model):
    """Tool arguments: unknown fields are refused, so a typo is reported, not ignored."""


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Text = Annotated[str, AfterValidator(_not_blank)]


class DelegateTaskArgs(_Args):
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


class ListTasksArgs(_Args):
    pass


class TaskArgs(_Args):
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
    feedback: Text = Field(min_length=1, max_length=MAX_GOAL_CHARS)


class RejectArgs(TaskArgs):
    comment: str = Field(default="", max_length=10_000)


_ARGS: dict[ToolName, type[_Args]] = {
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
    ToolName.REQUEST_CHANGES: "Send a task waiting for approval back to work with feedback.",
    ToolName.REJECT_TASK: "Reject a task waiting for approval; it ends without merging.",
    ToolName.CANCEL_TASK: "Stop a task; it cleans up and ends as cancelled.",
}


def _schema(name: ToolName) -> dict[str, Any]:
    parameters = _ARGS[name].model_json_schema()
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


class ToolScope(Model):
    """Who calls and from where: the session, its owner and its tasks."""

    session_id: str
    owner: str
    caller: Identity
    """The owner as last verified: the tools act with its roles, as the API would."""
    repo: str | None = None
    turn: int
    step: int
    tasks: list[SessionTask] = Field(default_factory=list)


class ToolOutcome(Model):
    call_id: str
    name: str
    content: str
    is_error: bool = False
    started: SessionTask | None = None
    """Set by a successful `delegate_task`: the session now tracks this task."""


Status = Callable[[str], Awaitable[TaskStatus]]


async def run_tool(
    call: ChatToolCall, index: int, scope: ToolScope, service: TaskService, status: Status
) -> ToolOutcome:
    """Check and execute one tool call; every failure becomes an error outcome.

    Args:
        call: The model's call (raw JSON arguments).
        index: Its position in the step, part of `delegate_task`'s idempotency key.
        scope: The session calling.
        service: The task facade.
        status: Reads a task's status (the gateway's live copy when it has one).
    """

    def error(message: str) -> ToolOutcome:
        return ToolOutcome(call_id=call.id, name=call.name, content=message, is_error=True)

    parsed = _parse(call)
    if isinstance(parsed, str):
        return error(parsed)
    name, args = parsed
    runner = _Runner(call, index, scope, service, status)
    try:
        return await runner.run(name, args)
    except ServiceError as exc:
        return error(str(exc))
    except Exception as exc:  # a tool must never take the turn down with it
        log.exception("tool %s failed", name)
        return error(f"{name} failed unexpectedly: {type(exc).__name__}: {exc}")


def _parse(call: ChatToolCall) -> tuple[ToolName, _Args] | str:
    """The tool and its validated arguments, or what is wrong with the call."""
    try:
        name = ToolName(call.name)
    except ValueError:
        return f"unknown tool {call.name!r}; tools: {', '.join(t.value for t in ToolName)}"
    try:
        decoded = json.loads(call.arguments or "{}")
    except json.JSONDecodeError as exc:
        return f"arguments of {name} are not valid JSON ({exc.msg} at {exc.pos})"
    if not isinstance(decoded, dict):
        return f"arguments of {name} must be a JSON object"
    try:
        return name, _ARGS[name].model_validate(decoded)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
        )
        return f"invalid arguments for {name}: {problems}"


class _Runner:
    def __init__(
        self,
        call: ChatToolCall,
        index: int,
        scope: ToolScope,
        service: TaskService,
        status: Status,
    ) -> None:
        self._call = call
        self._index = index
        self._scope = scope
        self._service = service
        self._status = status

    def _ok(self, content: str, started: SessionTask | None = None) -> ToolOutcome:
        return ToolOutcome(
            call_id=self._call.id,
            name=self._call.name,
            content=content[:MAX_ENTRY_CHARS],
            started=started,
        )

    async def run(self, name: ToolName, args: _Args) -> ToolOutcome:
        if isinstance(args, DelegateTaskArgs):
            return await self._delegate(args)
        if name is ToolName.LIST_TASKS:
            return await self._list()
        assert isinstance(args, TaskArgs)
        task_id = await self._resolve(name, args.task_id)
        if name is ToolName.TASK_STATUS:
            return self._ok(describe_status(await self._status(task_id)))
        if isinstance(args, ShowDiffArgs):
            return await self._diff(task_id, args)
        return self._ok(await self._act(task_id, args))

    async def _diff(self, task_id: str, args: ShowDiffArgs) -> ToolOutcome:
        diff = await self._service.diff(task_id, args.subagent, max_bytes=DIFF_CHARS)
        stat = diff.stat
        head = (
            f"{task_id}: {stat.files_changed} files changed, +{stat.insertions} "
            f"-{stat.deletions} ({', '.join(stat.files[:20])})"
        )
        cut = " (truncated; the full diff is in the task's diff view)" if diff.truncated else ""
        return self._ok(f"{head}{cut}\n\n{diff.patch[:DIFF_CHARS]}")

    async def _act(self, task_id: str, args: TaskArgs) -> str:
        """Steer, decide or cancel the task; what was done, in one line."""
        owner, service = self._scope.owner, self._service
        if isinstance(args, SteerArgs):
            await service.steer(task_id, SteerInput(by=owner, guidance=args.guidance))
            return f"{task_id}: guidance sent; running subagents get it at their next step"
        if isinstance(args, ApproveArgs):
            record = await service.approve(task_id, ApproveInput(by=owner, comment=args.comment))
            return f"{task_id}: approved by {record.by}; merging now"
        if isinstance(args, RequestChangesArgs):
            record = await service.request_changes(
                task_id, RequestChangesInput(by=owner, feedback=args.feedback)
            )
            return f"{task_id}: changes requested by {record.by}; the subagents resume"
        if isinstance(args, RejectArgs):
            record = await service.reject(task_id, RejectInput(by=owner, comment=args.comment))
            return f"{task_id}: rejected by {record.by}; nothing is merged"
        await service.cancel(task_id)
        return f"{task_id}: cancel requested; it cleans up and ends as cancelled"

    async def _delegate(self, args: DelegateTaskArgs) -> ToolOutcome:
        scope = self._scope
        known = self._service.repositories
        repo, question = repo_from_words(args.repo, scope.repo, args.goal, known)
        if repo is None:
            outcome = self._ok(f"not delegated, nothing started: {question}")
            return outcome.model_copy(update={"is_error": True})
        extra: dict[str, Any] = {}
        if args.max_parallel is not None:
            extra["max_parallel"] = args.max_parallel
        request = TaskRequest(
            goal=args.goal,
            repo=repo,
            subtasks=args.subtasks,
            review=args.review,
            owner=scope.owner,
            # The same call of the same step maps to one task: a turn resumed after a
            # gateway crash does not start it twice.
            request_id=f"{scope.session_id}/{scope.turn}/{scope.step}/{self._index}",
            **extra,
        )
        submitted = await self._service.submit(request)
        task = SessionTask(task_id=submitted.task_id, goal=args.goal, turn=scope.turn)
        return self._ok(
            f"started {submitted.task_id} for: {args.goal[:300]}. It runs on its own; its "
            "progress, the approval request and the merge are posted here as they happen.",
            started=task,
        )

    async def _list(self) -> ToolOutcome:
        tasks = self._scope.tasks[-LIST_LIMIT:]
        if not tasks:
            return self._ok("no tasks in this session yet")
        lines = [f"{t.task_id} · {t.phase.value} · {t.goal[:120]}" for t in reversed(tasks)]
        return self._ok("\n".join(lines))

    async def _resolve(self, name: ToolName, task_id: str | None) -> str:
        """The task meant and the caller's right to act on it (the API's rules)."""
        chosen = self._choose(name, task_id)
        action = _ACTION_OF.get(name, Action.READ)
        if action != Action.READ or not any(t.task_id == chosen for t in self._scope.tasks):
            await self._service.check_access(chosen, self._scope.caller, action)
        return chosen

    def _choose(self, name: ToolName, task_id: str | None) -> str:
        """The named task, else the only candidate of the session's tasks."""
        scope = self._scope
        if task_id is not None:
            return task_id
        if not scope.tasks:
            raise TaskNotFound("this session has no tasks yet: pass task_id")
        wanted = _PHASES_FOR.get(name)
        candidates = [t for t in scope.tasks if wanted is None or t.phase in wanted]
        if len(candidates) == 1:
            return candidates[0].task_id
        if not candidates:
            return scope.tasks[-1].task_id  # the newest; the service says why it cannot
        if wanted is None:
            return candidates[-1].task_id
        ids = ", ".join(t.task_id for t in candidates)
        raise TaskNotFound(f"several tasks fit ({ids}): pass task_id")


_ACTION_OF: dict[ToolName, Action] = {
    ToolName.APPROVE_TASK: Action.DECIDE,
    ToolName.REQUEST_CHANGES: Action.DECIDE,
    ToolName.REJECT_TASK: Action.DECIDE,
    ToolName.STEER_TASK: Action.STEER,
    ToolName.CANCEL_TASK: Action.CANCEL,
}
_DECIDABLE = frozenset({Phase.AWAITING_APPROVAL})
_LIVE = frozenset(p for p in Phase if not p.is_final)
_PHASES_FOR: dict[ToolName, frozenset[Phase]] = {
    ToolName.APPROVE_TASK: _DECIDABLE,
    ToolName.REQUEST_CHANGES: _DECIDABLE,
    ToolName.REJECT_TASK: _DECIDABLE,
    ToolName.STEER_TASK: _LIVE,
    ToolName.CANCEL_TASK: _LIVE,
}


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
