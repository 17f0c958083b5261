"""A subagent's loop state and what each step does to it: pure, no Temporal.

`SubagentRun` holds what the loop carries from step to step (and across
continue-as-new, as a `SubagentCheckpoint`); `absorb` books one step's result:
counters, the messages the model reads next, and whether the loop is over.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from switchboard import prompts
from switchboard.contracts import (
    ChatMessage,
    LlmTurnResult,
    StepResult,
    SubagentCheckpoint,
    SubagentResult,
)
from switchboard.models import TOOL_EXCERPT_CHARS, Budget, SubagentState
from switchboard.text import visible


class StepEnd(enum.Enum):
    GO_ON = "go_on"
    """Tools ran (or were refused): the model reads their answers next."""
    NUDGED = "nudged"
    """The model answered without a tool call; it is told to use one."""
    FINISHED = "finished"
    """The model called `finish`."""
    GAVE_UP = "gave_up"
    """The model answered without a tool call again after the nudge: its answer is the summary."""


@dataclass
class SubagentRun:
    result: SubagentResult
    worktree_path: str
    started: datetime
    pending: list[ChatMessage] = field(default_factory=list)
    transcript_length: int = 0
    nudged: bool = False
    runs: int = 1
    tools_used: list[dict[str, object]] = field(default_factory=list)
    """The tools of the last step absorbed: `{"tool", "ok", "limit", "exit_code",
    "excerpt"}` each (the excerpt bounded, see `excerpt`)."""

    @classmethod
    def resumed(cls, checkpoint: SubagentCheckpoint) -> SubagentRun:
        return cls(
            result=checkpoint.result,
            worktree_path=checkpoint.worktree_path,
            started=checkpoint.started_at,
            pending=list(checkpoint.pending),
            transcript_length=checkpoint.transcript_length,
            nudged=checkpoint.nudged,
            runs=checkpoint.runs + 1,
        )

    def checkpoint(self) -> SubagentCheckpoint:
        return SubagentCheckpoint(
            result=self.result,
            worktree_path=self.worktree_path,
            transcript_length=self.transcript_length,
            pending=self.pending,
            nudged=self.nudged,
            started_at=self.started,
            runs=self.runs,
        )

    def budget_spent(self, budget: Budget, now: datetime) -> str:
        """Which budget is spent ("" while none is)."""
        if self.result.steps >= budget.max_steps:
            return f"{budget.max_steps} steps"
        if self.result.tokens >= budget.max_tokens:
            return f"{budget.max_tokens} tokens"
        if (now - self.started).total_seconds() >= budget.max_wall_seconds:
            return f"{budget.max_wall_seconds} s of wall time"
        return ""

    def fail_if_idle(self) -> None:
        """A worker that ended without finishing and never ran a tool (every call refused,
        say malformed) did no work: it failed, so the task is never judged on it as done."""
        result = self.result
        if result.tool_calls or result.state is SubagentState.DONE:
            return
        why = result.error or "it stopped without finishing"
        result.state = SubagentState.FAILED
        result.error = f"no tool call ran ({result.denied_calls} refused); {why}"

    def absorb(self, step: StepResult) -> StepEnd:
        """Book one step (its refused calls are already counted, see `SubagentWorkflow`)."""
        turn = step.turn
        result = self.result
        self.transcript_length = turn.transcript_length
        result.steps += 1
        result.tokens += turn.usage.total_tokens
        self.pending = []
        self.tools_used = []
        if not turn.tool_calls:
            if self.nudged:
                result.summary = turn.content or "finished without a summary"
                return StepEnd.GAVE_UP
            self.nudged = True
            self.pending.append(ChatMessage(role="user", content=prompts.NO_TOOL_CALL_NUDGE))
            return StepEnd.NUDGED
        answers = {d.call_id: f"error: {d.message}" for d in step.denied}
        if step.finish is not None:
            result.summary = str(step.finish.arguments.get("summary") or "")
            result.verdict = step.finish.arguments.get("verdict")
            answers[step.finish.call_id] = "finished"
        result.tool_calls += len(step.outcomes)
        for outcome in step.outcomes:
            answers[outcome.call_id] = outcome.output
        self.tools_used = [
            {
                "tool": o.name,
                "ok": o.ok,
                "limit": o.limit,
                "exit_code": o.exit_code,
                "excerpt": excerpt(o.output),
            }
            for o in step.outcomes
        ]
        self.pending.extend(
            ChatMessage(role="tool", tool_call_id=c.id, content=answers.get(c.id, ""))
            for c in turn.tool_calls
        )
        return StepEnd.FINISHED if step.finish is not None else StepEnd.GO_ON


def describe_step(turn: LlmTurnResult, tools_used: list[dict[str, object]]) -> str:
    """One line for the event log: which tools ran and how each ended."""
    if not tools_used:
        names = ", ".join(c.name for c in turn.tool_calls) or "no tools"
        return f"called {names}"
    parts = []
    for used in tools_used:
        mark = "ok" if used["ok"] else f"failed ({used['limit'] or 'error'})"
        why = " ".join(str(used.get("excerpt") or "").split())[:160]
        parts.append(f"{used['tool']} {mark}" + (f": {why}" if why and not used["ok"] else ""))
    return ", ".join(parts)


def excerpt(output: str, limit: int = TOOL_EXCERPT_CHARS) -> str:
    """A bounded excerpt of a tool's output (hostile text: controls made visible):
    its head and its tail, where errors usually are."""
    if len(output) > limit:
        half = limit // 2
        output = f"{output[:half]}\n… [{len(output) - limit} chars cut] …\n{output[-half:]}"
    return visible(output)
