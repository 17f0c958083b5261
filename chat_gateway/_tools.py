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
from typing import Any

from pydantic import Field, ValidationError

from chat_gateway._tool_args import (
    ARGS,
    ApproveArgs,
    DelegateTaskArgs,
    RejectArgs,
    RequestChangesArgs,
    ShowDiffArgs,
    SteerArgs,
    TaskArgs,
    ToolArgs,
    ToolName,
    describe_status,
)
from switchboard.contracts import ChatToolCall
from switchboard.conversation import MAX_ENTRY_CHARS, SessionTask
from switchboard.errors import ServiceError, TaskNotFound
from switchboard.frontends import repo_from_words
from switchboard.identity import Action, Identity
from switchboard.models import (
    ApproveInput,
    Model,
    Phase,
    RejectInput,
    RequestChangesInput,
    SteerInput,
    TaskRequest,
    TaskStatus,
)
from switchboard.service import TaskService

__all__ = ["ToolOutcome", "ToolScope", "run_tool"]

log = logging.getLogger(__name__)

DIFF_CHARS = 8_000
"""The patch a `show_diff` result quotes; the rest stays in git (and the web diff view)."""
LIST_LIMIT = 20


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


def _parse(call: ChatToolCall) -> tuple[ToolName, ToolArgs] | str:
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
        return name, ARGS[name].model_validate(decoded)
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

    async def run(self, name: ToolName, args: ToolArgs) -> ToolOutcome:
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
        owner, service, caller = self._scope.owner, self._service, self._scope.caller
        if isinstance(args, SteerArgs):
            steer = SteerInput(by=owner, guidance=args.guidance)
            await service.steer(task_id, steer, caller=caller)
            return f"{task_id}: guidance sent; running subagents get it at their next step"
        if isinstance(args, ApproveArgs):
            approval = ApproveInput(by=owner, comment=args.comment)
            record = await service.approve(task_id, approval, caller=caller)
            return f"{task_id}: approved by {record.by}; merging now"
        if isinstance(args, RequestChangesArgs):
            decision = RequestChangesInput(by=owner, feedback=args.feedback, rebase=args.rebase)
            record = await service.request_changes(task_id, decision, caller=caller)
            if args.rebase:
                return (
                    f"{task_id}: rebase requested by {record.by}; the change moves onto the "
                    "target's tip, is reviewed again and comes back for approval"
                )
            return f"{task_id}: changes requested by {record.by}; the subagents resume"
        if isinstance(args, RejectArgs):
            rejection = RejectInput(by=owner, comment=args.comment)
            record = await service.reject(task_id, rejection, caller=caller)
            return f"{task_id}: rejected by {record.by}; nothing is merged"
        await service.cancel(task_id, caller=caller)
        return f"{task_id}: cancel requested; it cleans up and ends as cancelled"

    async def _delegate(self, args: DelegateTaskArgs) -> ToolOutcome:
        scope = self._scope
        known = self._service.repositories_for(scope.owner)
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
        submitted = await self._service.submit(request, caller=scope.caller)
        task = SessionTask(task_id=submitted.task_id, goal=args.goal, turn=scope.turn)
        return self._ok(
            f"started {submitted.task_id} for: {args.goal[:300]}. It runs on its own; its "
            "progress, the approval request and the merge are posted here as they happen."
            + (f" Note: {submitted.notice}." if submitted.notice else ""),
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
