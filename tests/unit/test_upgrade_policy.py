"""The upgrade policy's mechanism (docs/operations.md, "Upgrading workflows").

A recorded history of the current release replays against changed workflow
code: a change that alters the commands fails the replay, and the same change
behind `workflow.patched` passes it. This is what keeps a task parked at the
approval gate (or a subagent mid-run) working across a deploy.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner
from temporalio.workflow import NondeterminismError

from switchboard.contracts import SubagentInput, SubagentResult
from switchboard.wire import Workflows
from tests.histories.record import CURRENT
from workflows._steps import SubagentRun
from workflows.subagent import SubagentWorkflow


async def _extra_timer() -> None:
    await workflow.sleep(timedelta(seconds=1))


@workflow.defn(name=Workflows.SUBAGENT, sandboxed=False)
class Unpatched(SubagentWorkflow):
    """A new release waits a second before each subagent starts, with no gate."""

    @workflow.run
    async def run(self, input: SubagentInput) -> SubagentResult:
        return await super().run(input)

    async def _begin(self, input: SubagentInput) -> SubagentRun:
        await _extra_timer()
        return await super()._begin(input)


@workflow.defn(name=Workflows.SUBAGENT, sandboxed=False)
class Patched(SubagentWorkflow):
    """The same change behind a patch gate, as the policy requires."""

    @workflow.run
    async def run(self, input: SubagentInput) -> SubagentResult:
        return await super().run(input)

    async def _begin(self, input: SubagentInput) -> SubagentRun:
        if workflow.patched("wait-before-start"):
            await _extra_timer()
        return await super()._begin(input)


async def replay(workflow_class: type) -> None:
    document = json.loads((CURRENT / "subagent_worker.json").read_text())
    history = WorkflowHistory.from_json(document["workflow_id"], document["history"])
    replayer = Replayer(
        workflows=[workflow_class],
        data_converter=pydantic_data_converter,
        workflow_runner=UnsandboxedWorkflowRunner(),  # the commands, not the sandbox, are tested
    )
    await replayer.replay_workflow(history)


async def test_an_ungated_change_fails_the_replay_of_a_recorded_run() -> None:
    with pytest.raises(NondeterminismError):
        await replay(Unpatched)


async def test_the_same_change_behind_a_patch_replays() -> None:
    await replay(Patched)
