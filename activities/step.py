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
3. the allowed calls run in order in the sandbox (`ToolActivities.run_calls`).

The result carries the model's turn and each call's verdict or outcome, so the
workflow history still shows what the model asked for and what was refused.
"""

from __future__ import annotations

from temporalio import activity

from activities._heartbeat import heartbeating
from activities.llm import LlmActivities
from activities.tools import ToolActivities
from switchboard.contracts import StepInput, StepResult
from switchboard.tools import CheckedCall, DeniedCall, ToolName, check_call
from switchboard.wire import Activities


class StepActivities:
    """The one-activity subagent step, composed of the model and tool activities."""

    def __init__(self, llm: LlmActivities, tools: ToolActivities) -> None:
        self._llm = llm
        self._tools = tools

    @activity.defn(name=Activities.SUBAGENT_STEP)
    async def subagent_step(self, input: StepInput) -> StepResult:
        """Model turn, role check, tool calls.

        Raises:
            ApplicationError: as `LlmActivities.turn` and `ToolActivities.run_calls` do.
        """
        if input.start_sandbox:
            await heartbeating(self._tools.start(input.sandbox))
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
            step.outcomes = await heartbeating(
                self._tools.run_calls(input.sandbox, input.base_commit, allowed)
            )
        return step
