"""The plain alternative: the same task as a plain asyncio program, no Temporal.

It calls exactly what Switchboard's activities call — the git functions of
`activities._git`, `LlmActivities.turn` (the `openai` client, the transcript
files), the tool runner and the same sandbox — in the same order as
`DelegatedTaskWorkflow` and `SubagentWorkflow`, with the same role checks.
`temporalio.testing.ActivityEnvironment` only supplies the activity context that
the heartbeat helper reads; no server is involved. What it lacks is what
Temporal adds: durability, retries, history — the cost B1 measures.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from temporalio.testing import ActivityEnvironment

from activities import _git
from activities.llm import LlmActivities
from activities.sandbox import Sandbox
from activities.tools import ToolActivities
from switchboard import prompts
from switchboard.contracts import (
    ChatMessage,
    CommitInput,
    IntegrateInput,
    LlmTurnInput,
    LlmTurnResult,
    MergeOutcome,
    PreparedRepo,
    PrepareRepoInput,
    SandboxSpec,
    WorktreeInput,
)
from switchboard.models import SubtaskSpec
from switchboard.settings import Settings
from switchboard.tools import CheckedCall, DeniedCall, ToolName, check_call
from switchboard.wire import subagent_branch, task_branch


@dataclass
class PlainRun:
    wall: float
    first_step: float
    """Seconds from the start to the first subagent's first model call."""
    merge: MergeOutcome
    steps: int
    events: list[str] = field(default_factory=list)


class PlainRunner:
    """Runs one task the way a hand-written asyncio program would."""

    def __init__(self, settings: Settings, sandbox: Sandbox) -> None:
        self._settings = settings
        self._llm = LlmActivities(settings)
        self._tools = ToolActivities(settings, sandbox)
        self._sandbox = sandbox

    async def close(self) -> None:
        await self._llm.close()

    async def run(
        self, task_id: str, repo: str, subtasks: list[SubtaskSpec], goal: str, max_steps: int = 50
    ) -> PlainRun:
        started = time.monotonic()
        first_step: list[float] = []
        prepared = await asyncio.to_thread(
            _git.prepare_mirror, self._settings, PrepareRepoInput(repo=repo)
        )
        results = await asyncio.gather(
            *(
                self._subagent(task_id, i, spec, goal, prepared, max_steps, started, first_step)
                for i, spec in enumerate(subtasks, start=1)
            )
        )
        merge = await asyncio.to_thread(
            _git.integrate_branches,
            self._settings,
            IntegrateInput(
                task_id=task_id,
                repo=prepared.repo,
                mirror_path=prepared.mirror_path,
                base_commit=prepared.base_commit,
                branches=[subagent_branch(task_id, i) for i in range(1, len(subtasks) + 1)],
                integration_branch=f"{task_branch(task_id)}/merged",
                target_branch=task_branch(task_id),
                is_local=prepared.is_local,
            ),
        )
        return PlainRun(
            wall=time.monotonic() - started,
            first_step=(min(first_step) if first_step else 0.0),
            merge=merge,
            steps=sum(results),
        )

    async def _subagent(
        self,
        task_id: str,
        index: int,
        spec: SubtaskSpec,
        goal: str,
        prepared: PreparedRepo,
        max_steps: int,
        started: float,
        first_step: list[float],
    ) -> int:
        branch = subagent_branch(task_id, index)
        worktree = await asyncio.to_thread(
            _git.create_worktree,
            self._settings,
            WorktreeInput(
                task_id=task_id,
                index=index,
                mirror_path=prepared.mirror_path,
                base_commit=prepared.base_commit,
                branch=branch,
            ),
        )
        sandbox = SandboxSpec(
            sandbox_id=f"{task_id}-{index}",
            worktree_path=worktree.path,
            role=spec.role,
            mirror_path=prepared.mirror_path,
        )
        await self._sandbox.start(sandbox)
        pending = [
            ChatMessage(role="system", content=prompts.SYSTEM_PROMPTS[spec.role]),
            ChatMessage(role="user", content=prompts.subtask_prompt(goal, spec)),
        ]
        length = 0
        steps = 0
        finished = False
        while not finished and steps < max_steps:
            if not first_step:
                first_step.append(time.monotonic() - started)
            turn: LlmTurnResult = await ActivityEnvironment().run(
                self._llm.turn,
                LlmTurnInput(
                    transcript_id=f"{task_id}/{index}/r1",
                    call_id=f"{task_id}/{index}/r1/{steps}",
                    role=spec.role,
                    expected_length=length,
                    new_messages=pending,
                    task_id=task_id,
                    subagent=index,
                ),
            )
            length = turn.transcript_length
            steps += 1
            pending = []
            answers: dict[str, str] = {}
            checked: list[CheckedCall] = []
            for call in turn.tool_calls:
                verdict = check_call(spec.role, call.id, call.name, call.arguments)
                if isinstance(verdict, DeniedCall):
                    answers[call.id] = f"error: {verdict.message}"
                elif verdict.name is ToolName.FINISH:
                    finished = True
                    answers[call.id] = "finished"
                else:
                    checked.append(verdict)
            for checked_call in checked:
                outcome = await self._tools.run_one(sandbox, prepared.base_commit, checked_call)
                answers[outcome.call_id] = outcome.output
            pending.extend(
                ChatMessage(role="tool", tool_call_id=c.id, content=answers.get(c.id, ""))
                for c in turn.tool_calls
            )
            if not turn.tool_calls:
                finished = True
        await asyncio.to_thread(
            _git.commit_worktree,
            self._settings,
            CommitInput(
                worktree_path=worktree.path,
                base_commit=prepared.base_commit,
                message=f"{spec.title}\n\nplain runner {task_id}, subagent {index}",
            ),
        )
        return steps
