"""Replay committed histories against today's workflow code.

A change that would break a task parked at the approval gate (or a subagent
mid-run) fails here instead of in production. Re-record with
`python -m tests.histories.record` only for changes parked tasks can tolerate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from entrypoints.worker import workflow_runner
from workflows import ConversationWorkflow, DelegatedTaskWorkflow, SubagentWorkflow

HISTORIES = sorted((Path(__file__).parent.parent / "histories").glob("*.json"))


def test_histories_are_committed() -> None:
    assert len(HISTORIES) >= 8


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_replay(path: Path) -> None:
    replayer = Replayer(
        workflows=[DelegatedTaskWorkflow, SubagentWorkflow, ConversationWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    document = json.loads(path.read_text())
    history = WorkflowHistory.from_json(document["workflow_id"], document["history"])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
