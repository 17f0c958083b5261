"""Stand-in activities under the production names: no git, no sandbox, no model.

Each records its calls so a test can say how often and when (on the workflow's
clock) an activity ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from switchboard.contracts import (
    BAD_PLAN_ATTEMPTS,
    ChatToolCall,
    CleanupInput,
    CommitResult,
    FinishSubagentInput,
    FinishSubagentResult,
    IntegrateInput,
    LlmTurnResult,
    MergeOutcome,
    Plan,
    PlanInput,
    PreparedRepo,
    PrepareRepoInput,
    StepInput,
    StepResult,
    TargetInput,
    ToolOutcome,
    Usage,
    WorktreeInfo,
    WorktreeInput,
)
from switchboard.models import DiffStat, MergeResult, SubtaskSpec, TargetCheck
from switchboard.tools import CheckedCall, ToolName
from switchboard.wire import Activities, Errors


@dataclass
class Fakes:
    """The first `plan_failures` plans fail; a subagent takes `tool_steps` steps, then finishes."""

    plan_failures: int = 0
    plan_outages: int = 0
    """The first `plan_outages` planner calls fail as an outage (before any bad plan)."""
    tool_steps: int = 0
    plan_attempts: list[int] = field(default_factory=list)
    """The attempt number of each plan call."""
    flaky_step: int | None = None
    """This step (0-based) meets an unavailable model on its first `flaky_attempts` attempts."""
    flaky_attempts: int = 0
    steps: int = 0
    cleanups: int = 0

    def activities(self) -> list[Callable[..., Any]]:
        return [
            self.prepare_repo,
            self.plan_subtasks,
            self.create_worktree,
            self.subagent_step,
            self.finish_subagent,
            self.integrate_branches,
            self.check_target,
            self.cleanup_task,
        ]

    @activity.defn(name=Activities.PREPARE_REPO)
    async def prepare_repo(self, inp: PrepareRepoInput) -> PreparedRepo:
        return PreparedRepo(
            repo=inp.repo,
            mirror_path="/nowhere/mirror",
            base_ref="main",
            base_commit="0" * 40,
            is_local=True,
            host_queue=activity.info().task_queue,
        )

    @activity.defn(name=Activities.PLAN_SUBTASKS)
    async def plan_subtasks(self, inp: PlanInput) -> Plan:
        attempt = activity.info().attempt
        self.plan_attempts.append(attempt)
        if len(self.plan_attempts) <= self.plan_outages:
            raise ApplicationError("429 from the planner", type=Errors.MODEL_UNAVAILABLE)
        if len(self.plan_attempts) <= self.plan_outages + self.plan_failures:
            # As the real activity: a bad plan is retried, but only BAD_PLAN_ATTEMPTS times.
            raise ApplicationError(
                "the planner answered nonsense",
                type=Errors.MODEL_OUTPUT_INVALID,
                non_retryable=attempt >= BAD_PLAN_ATTEMPTS,
            )
        return Plan(subtasks=[SubtaskSpec(title="the only subtask")])

    @activity.defn(name=Activities.CREATE_WORKTREE)
    async def create_worktree(self, inp: WorktreeInput) -> WorktreeInfo:
        return WorktreeInfo(path=f"/nowhere/{inp.branch}", branch=inp.branch, head=inp.base_commit)

    @activity.defn(name=Activities.SUBAGENT_STEP)
    async def subagent_step(self, inp: StepInput) -> StepResult:
        self.steps += 1
        number = int(inp.turn.call_id.rsplit("/", 1)[1])
        if number == self.flaky_step and activity.info().attempt <= self.flaky_attempts:
            raise ApplicationError("the model is unavailable", type=Errors.MODEL_UNAVAILABLE)
        if self.steps <= self.tool_steps:
            call = ChatToolCall(id=f"c-{inp.turn.call_id}", name="list_files", arguments="{}")
            return StepResult(
                turn=_turn(call),
                outcomes=[ToolOutcome(call_id=call.id, name="list_files", ok=True, output=".")],
            )
        done = ChatToolCall(id="f", name="finish", arguments='{"summary": "done"}')
        return StepResult(
            turn=_turn(done),
            finish=CheckedCall(
                call_id="f",
                name=ToolName.FINISH,
                arguments={"summary": "done", "verdict": "approve"},
            ),
        )

    @activity.defn(name=Activities.FINISH_SUBAGENT)
    async def finish_subagent(self, inp: FinishSubagentInput) -> FinishSubagentResult:
        commit = None
        if inp.commit is not None:
            commit = CommitResult(
                head="1" * 40, committed=True, diff_stat=DiffStat(files_changed=1)
            )
        return FinishSubagentResult(commit=commit)

    @activity.defn(name=Activities.INTEGRATE_BRANCHES)
    async def integrate_branches(self, inp: IntegrateInput) -> MergeOutcome:
        branch = inp.target_branch if inp.publish else inp.integration_branch
        return MergeOutcome(
            result=MergeResult(branch=branch, merged=True, commit="2" * 40),
            stat=DiffStat(files_changed=1, insertions=1),
        )

    @activity.defn(name=Activities.CHECK_TARGET)
    async def check_target(self, inp: TargetInput) -> TargetCheck:
        return TargetCheck(
            branch=inp.branch,
            base_commit=inp.base_commit,
            tip=inp.base_commit,
            checked_at=datetime.now(UTC),
            message=f"up to date with {inp.branch}",
        )

    @activity.defn(name=Activities.CLEANUP_TASK)
    async def cleanup_task(self, inp: CleanupInput) -> None:
        self.cleanups += 1


def _turn(call: ChatToolCall) -> LlmTurnResult:
    return LlmTurnResult(tool_calls=[call], usage=Usage(total_tokens=10), transcript_length=2)
