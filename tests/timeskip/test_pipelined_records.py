"""Records that name their step: applied in step order whatever order they arrive in,
refused (and nothing lost) when they can never apply, on the time-skipping clock."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.testing import WorkflowEnvironment

from switchboard.conversation import (
    NewEntry,
    PostMessage,
    PostResult,
    RecordResult,
    RecordTurn,
    SessionStart,
    SessionState,
)
from switchboard.wire import Conversation
from tests.timeskip.test_long_chat import OWNER, RUNNER, chat_worker, entries
from workflows._turns import TURN_LEASE


def _record(turn: int, step: int | None, text: str, *, finish: bool = False) -> RecordTurn:
    entry = NewEntry(role="assistant", content=text, ends_turn=finish)
    return RecordTurn(turn=turn, runner=RUNNER, entries=[entry], step=step, finish=finish)


async def _post(handle: WorkflowHandle[Any, Any], n: int) -> PostResult:
    post = PostMessage(by=OWNER, content=f"message {n}", runner=RUNNER, request_id=f"m{n}")
    result: PostResult = await handle.execute_update(
        Conversation.POST_MESSAGE, post, result_type=PostResult
    )
    return result


async def _session(env: WorkflowEnvironment, queue: str) -> WorkflowHandle[Any, Any]:
    return await env.client.start_workflow(
        Conversation.WORKFLOW,
        SessionStart(owner=OWNER),
        id=f"session-{uuid.uuid4().hex}",
        task_queue=queue,
    )


async def test_records_arriving_out_of_order_are_applied_in_step_order(
    env: WorkflowEnvironment,
) -> None:
    async with chat_worker(env.client, sandboxed=True) as queue:
        handle = await _session(env, queue)
        assert (await _post(handle, 1)).claimed
        await _post(handle, 2)
        # Turn 2's answer and turn 1's last step arrive before turn 1's first step.
        later = await handle.start_update(
            Conversation.RECORD_TURN,
            _record(2, 0, "answer 2", finish=True),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            result_type=RecordResult,
        )
        last = await handle.start_update(
            Conversation.RECORD_TURN,
            _record(1, 1, "answer 1", finish=True),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            result_type=RecordResult,
        )
        first: RecordResult = await handle.execute_update(
            Conversation.RECORD_TURN, _record(1, 0, "working on 1"), result_type=RecordResult
        )
        assert (await last.result()).next_turn == 2
        assert (await later.result()).next_turn is None
        page = await entries(handle, 0)
        assert [e.content for e in page.entries] == [
            "message 1",
            "message 2",
            "working on 1",
            "answer 1",
            "answer 2",
        ]
        assert first.stamp.first_offset == 2
        state: SessionState = await handle.query(Conversation.STATE, result_type=SessionState)
        assert state.turns == []


async def test_a_record_that_can_never_apply_is_refused_and_the_turn_goes_on(
    env: WorkflowEnvironment,
) -> None:
    async with chat_worker(env.client, sandboxed=True) as queue:
        handle = await _session(env, queue)
        await _post(handle, 1)
        # Step 1 without step 0: it waits a lease for it, then is refused.
        stranded = await handle.start_update(
            Conversation.RECORD_TURN,
            _record(1, 1, "lost"),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            result_type=RecordResult,
        )
        await env.sleep(TURN_LEASE * 1.5)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await stranded.result()
        assert "records before it did not come" in str(refused.value.cause)

        # The turn is still open and answerable; a step given twice is refused at once.
        await handle.execute_update(Conversation.RECORD_TURN, _record(1, 0, "step 0"))
        for bad, why in (
            (_record(1, 0, "step 0 again"), "recorded already"),
            (_record(5, 0, "no such turn"), "not waiting for an answer"),
            (_record(1, None, "by another").model_copy(update={"runner": "x"}), "not being"),
        ):
            with pytest.raises(WorkflowUpdateFailedError) as failed:
                await handle.execute_update(Conversation.RECORD_TURN, bad)
            assert why in str(failed.value.cause)
        answer = _record(1, 1, "answer 1", finish=True)
        done: RecordResult = await handle.execute_update(
            Conversation.RECORD_TURN, answer, result_type=RecordResult
        )
        page = await entries(handle, 0)
        assert [e.content for e in page.entries] == ["message 1", "step 0", "answer 1"]
        assert done.stamp.first_offset == 2
