"""One subagent step as one activity: a model turn, the role check, the tools.

A step used to be two activities (the model turn, then the tools), each paying a
workflow-task round trip through the server; on two cores that round trip was
most of Switchboard's overhead over a plain runner (bench B1). Here the step is
one activity on the subagent's host queue:

0. on a subagent's first step, its sandbox starts (one round trip less than
   a sandbox-start activity of its own);
1. the model turn (`LlmActivities.turn`), recorded in the transcript file before
   any tool runs, so a retry after a crash reuses the reply instead of paying
   for it again;
2. every tool call checked against the role with the same pure `check_call` the
   workflow used, before any of it reaches the sandbox (the sandbox's mounts are
   the second, independent line);
3. the allowed calls run in order in the sandbox, each journaled (`_journal`):
   its start (with a checkpoint of the worktree when the call may write) before
   it runs, its outcome after.

A retried step never runs a command twice. A call with a journaled outcome is
not run again: its outcome is reused. A call that started but has no outcome was
interrupted by the crash. For `run` and `apply_patch` (checkpointed before they
start) whatever of it may still run is killed and the worktree is restored to the
checkpoint; an interrupted `run` is not run again (the model is told it was
interrupted and rolled back), an interrupted patch is applied again to the restored
files, so it lands once. Read-only calls and `write_file` (which sets a file to
given content) simply run again: doing them twice ends as doing them once. The
calls after an interrupted one run as usual.

The result carries the model's turn and each call's verdict or outcome, so the
workflow history still shows what the model asked for and what was refused.
While it waits (on the model, on a command), the activity heartbeats a
`StepHeartbeat` saying what it waits on and since when.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._checkpoint import CheckpointError, Checkpoints
from activities._excludes import default_excludes_file
from activities._heartbeat import WaitNotice, heartbeating
from activities._journal import (
    JournalEntry,
    StepJournal,
    checkpoint_index_path,
    journal_path,
    load_journal,
    save_journal,
)
from activities._task_repo import is_repository_of
from activities._transcripts import TaskEndedError, TranscriptIdError, task_ended
from activities.llm import LlmActivities
from activities.tools import ToolActivities
from switchboard.contracts import StepInput, StepResult, ToolOutcome
from switchboard.settings import Settings
from switchboard.step_heartbeat import StepHeartbeat, StepStage
from switchboard.tools import CheckedCall, DeniedCall, ToolName, check_call
from switchboard.wire import Activities, Errors

CHECKPOINTED = frozenset({ToolName.APPLY_PATCH, ToolName.RUN})
"""Calls whose effects depend on what they find: checkpointed first. The others only
read, or (`write_file`) set a file to given content, so doing them again lands once."""
REDONE_AFTER_ROLLBACK = frozenset({ToolName.APPLY_PATCH})
"""An edit, not a command: once the worktree is back at the checkpoint, applying the
patch again makes it land exactly once. A `run` command is never run a second time."""

INTERRUPTED = (
    "interrupted: the worker running this call crashed before it ended. Its effects "
    "on the repository's files were rolled back and it was not run again; call it "
    "again if it is still needed."
)
NOT_ROLLED_BACK = (
    "interrupted: the worker running this call crashed before it ended, and its "
    "effects could not be rolled back ({why}); it was not run again. Check the "
    "files it may have changed before going on."
)


class StepActivities:
    """The one-activity subagent step, composed of the model and tool activities."""

    def __init__(self, llm: LlmActivities, tools: ToolActivities) -> None:
        self._llm = llm
        self._tools = tools

    @activity.defn(name=Activities.SUBAGENT_STEP)
    async def subagent_step(self, input: StepInput) -> StepResult:
        """Model turn, role check, tool calls (each at most once, see the module).

        Raises:
            ApplicationError: as `LlmActivities.turn` and `ToolActivities.run_calls` do;
                `InvalidInput` for a bad step id or an unreadable journal.
        """
        _require_live(self._tools.settings, input)
        if input.start_sandbox:
            await heartbeating(
                self._tools.start(input.sandbox), StepHeartbeat.now(StepStage.SANDBOX)
            )
        turn = await self._llm.turn(input.turn)
        step = StepResult(turn=turn)
        allowed: list[CheckedCall] = []
        for call in turn.tool_calls:
            verdict = check_call(input.turn.role, call.id, call.name, call.arguments)
            if isinstance(verdict, DeniedCall):
                step.denied.append(verdict)
            elif verdict.name is ToolName.FINISH:
                step.finish = verdict
            else:
                allowed.append(verdict)
        if allowed:
            step.outcomes = await _JournaledCalls(self._tools, input).run(allowed)
        return step


class _JournaledCalls:
    """The tool calls of one step, run at most once each across attempts."""

    def __init__(self, tools: ToolActivities, input: StepInput) -> None:
        self._tools = tools
        self._input = input
        root = tools.settings.transcripts_dir
        try:
            self._journal_path = journal_path(root, input.turn.call_id)
            index = checkpoint_index_path(root, input.turn.transcript_id)
        except TranscriptIdError as exc:
            raise ApplicationError(str(exc), type=Errors.INVALID_INPUT, non_retryable=True) from exc
        self._checkpoints = _checkpoints(tools.settings, input, index)

    async def run(self, calls: list[CheckedCall]) -> list[ToolOutcome]:
        journal = await self._load()
        outcomes = []
        for position, call in enumerate(calls):
            entry = journal.entry(position, call.call_id)
            if entry is not None and entry.outcome is not None:
                outcomes.append(entry.outcome)  # ran in an earlier attempt
                continue
            if entry is None:
                entry = await self._begin(journal, position, call)
                entry.outcome = await self._run(call)
            elif call.name in CHECKPOINTED:  # interrupted: undo what it may have done
                entry.outcome = await self._roll_back(entry, call)
            else:  # interrupted, but doing it again changes nothing more
                entry.outcome = await self._run(call)
            await self._save(journal)
            outcomes.append(entry.outcome)
        return outcomes

    async def _load(self) -> StepJournal:
        try:
            return await asyncio.to_thread(load_journal, self._journal_path)
        except ValidationError as exc:
            raise ApplicationError(
                f"the tool journal of step {self._input.turn.call_id} is corrupt",
                type=Errors.INVALID_INPUT,
                non_retryable=True,
            ) from exc

    async def _begin(self, journal: StepJournal, position: int, call: CheckedCall) -> JournalEntry:
        """Journal the call's start, with a checkpoint first where a rollback may be needed."""
        entry = JournalEntry(position=position, call_id=call.call_id)
        if call.name in CHECKPOINTED and self._checkpoints is not None:
            try:
                entry.checkpoint = await heartbeating(asyncio.to_thread(self._checkpoints.take))
            except CheckpointError as exc:
                # Without a checkpoint a crash could not be undone: do not start the call.
                raise ApplicationError(
                    f"cannot checkpoint the worktree before {call.name.value}: {exc}",
                    type=Errors.SANDBOX_UNAVAILABLE,
                ) from exc
        journal.entries.append(entry)
        await self._save(journal)
        return entry

    async def _save(self, journal: StepJournal) -> None:
        """Raises: ApplicationError `TaskEnded` once the task ended here (a straggler)."""
        root = self._tools.settings.transcripts_dir
        try:
            await asyncio.to_thread(save_journal, root, self._journal_path, journal)
        except TaskEndedError as exc:
            raise ApplicationError(str(exc), type=Errors.TASK_ENDED, non_retryable=True) from exc

    async def _run(self, call: CheckedCall) -> ToolOutcome:
        waiting = StepHeartbeat.now(StepStage.TOOL, tool=call.name.value)
        activity.heartbeat(waiting)
        ran = self._tools.run_calls(self._input.sandbox, self._input.base_commit, [call])
        notice = WaitNotice(self._tools.settings.step_wait_notice_seconds)
        return (await heartbeating(ran, waiting, notice=notice))[0]

    async def _roll_back(self, entry: JournalEntry, call: CheckedCall) -> ToolOutcome:
        """Undo an interrupted call: kill what may still run of it, restore the worktree."""
        spec = self._input.sandbox
        waiting = StepHeartbeat.now(StepStage.ROLLBACK, tool=call.name.value)
        activity.heartbeat(waiting)
        await heartbeating(self._tools.stop_everything(spec.sandbox_id), waiting)
        try:
            if entry.checkpoint is None or self._checkpoints is None:
                raise CheckpointError("no checkpoint was taken")
            restore = asyncio.to_thread(self._checkpoints.restore, entry.checkpoint)
            await heartbeating(restore, waiting)
            output = INTERRUPTED
        except CheckpointError as exc:
            output = NOT_ROLLED_BACK.format(why=exc)
        activity.logger.warning(
            "step %s: %s call %s was interrupted by a crash; %s",
            self._input.turn.call_id,
            call.name.value,
            call.call_id,
            "rolled back" if output is INTERRUPTED else "NOT rolled back",
        )
        await heartbeating(self._tools.start(spec), waiting)
        if output is INTERRUPTED and call.name in REDONE_AFTER_ROLLBACK:
            return await self._run(call)  # from the same files: its edit lands once
        return ToolOutcome(call_id=call.call_id, name=call.name.value, ok=False, output=output)


def _require_live(settings: Settings, input: StepInput) -> None:
    """Fail a step of a task that ended on this host (it outlived its workflow: a lost
    cancel, a worker cut off) before it pays a model call or runs a command.

    Raises:
        ApplicationError: `TaskEnded` or `SandboxUnavailable` (non-retryable).
    """
    task_id = input.turn.transcript_id.partition("/")[0]  # its files' folder
    if task_ended(settings.transcripts_dir, task_id):
        raise ApplicationError(
            f"task {task_id} already ended on this host; step not run",
            type=Errors.TASK_ENDED,
            non_retryable=True,
        )
    _require_worktree(input)


def _require_worktree(input: StepInput) -> None:
    """Fail the step, before any model call is paid, when the worktree is gone.

    Its uncommitted work is lost with it; going on would let the model build on files
    that are not there. The subagent fails, naming the loss; the task's gate then
    offers to retry it (its worktree rebuilt from its branch) or to drop it.

    Raises:
        ApplicationError: `SandboxUnavailable` (non-retryable).
    """
    if not Path(input.sandbox.worktree_path).is_dir():
        raise ApplicationError(
            f"the worktree {input.sandbox.worktree_path} was lost (deleted on the host) with "
            "this run's uncommitted work; retrying the subagent rebuilds it from its branch",
            type=Errors.SANDBOX_UNAVAILABLE,
            non_retryable=True,
        )


def _checkpoints(settings: Settings, input: StepInput, index: Path) -> Checkpoints | None:
    """Checkpoints of the step's worktree, which must be one of this host's.

    Raises:
        ApplicationError: `InvalidInput` for a worktree or mirror elsewhere.
    """
    if not input.sandbox.mirror_path:
        return None
    mirror = Path(input.sandbox.mirror_path).resolve()
    work_tree = Path(input.sandbox.worktree_path).resolve()
    if not (
        is_repository_of(settings, mirror)
        and work_tree.is_relative_to(settings.worktrees_dir.resolve())
    ):
        raise ApplicationError(
            f"{work_tree} (mirror {mirror}) is not a Switchboard worktree of this host",
            type=Errors.INVALID_INPUT,
            non_retryable=True,
        )
    return Checkpoints(mirror, work_tree, index, default_excludes_file(settings.data_dir))
