"""Replay committed histories against today's workflow code.

`tests/histories/current/` holds one history of every workflow shape, recorded
from the code as it is; every other folder, `tests/histories/<release>/`, holds
the histories recorded at that release. Replaying those against today's code is
the upgrade test: a change that would break a task parked at the approval gate
(or a subagent mid-run) of a released version fails here instead of in
production. See "Upgrading workflows" in docs/operations.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from entrypoints.worker import workflow_runner
from tests.histories.record import CURRENT, SHAPES
from workflows import ConversationWorkflow, DelegatedTaskWorkflow, SubagentWorkflow

ROOT = CURRENT.parent
HISTORIES = sorted(ROOT.glob("*/*.json"))


def test_every_current_shape_is_recorded() -> None:
    assert sorted(p.stem for p in CURRENT.glob("*.json")) == sorted(SHAPES)


def test_no_history_lies_outside_a_release_folder() -> None:
    assert list(ROOT.glob("*.json")) == []


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: f"{p.parent.name}/{p.stem}")
async def test_replay(path: Path) -> None:
    replayer = Replayer(
        workflows=[DelegatedTaskWorkflow, SubagentWorkflow, ConversationWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
        # Workflows that run unsandboxed in production (the conversation) replay inside the
        # sandbox here, so a clock, random or I/O call in them fails this test.
        unsandboxed_workflow_runner=workflow_runner(),
    )
    document = json.loads(path.read_text())
    history = WorkflowHistory.from_json(document["workflow_id"], document["history"])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
