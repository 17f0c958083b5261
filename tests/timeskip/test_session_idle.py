"""An idle session closes itself after its idle time, on the time-skipping clock,
and keeps one timer per quiet stretch: messages do not each start and cancel one."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from switchboard.conversation import SessionStart, SessionState
from switchboard.wire import Conversation
from tests.timeskip.test_long_chat import OWNER, Chat, chat_worker

IDLE = 3600.0


async def test_talking_keeps_a_session_open_and_silence_closes_it(
    env: WorkflowEnvironment,
) -> None:
    async with chat_worker(env.client, sandboxed=True) as queue:
        handle = await env.client.start_workflow(
            Conversation.WORKFLOW,
            SessionStart(owner=OWNER, idle_seconds=IDLE),
            id=f"session-{uuid.uuid4().hex}",
            task_queue=queue,
        )
        # Not pipelined: a record sent before its predecessor may wait for it on a timer.
        chat = Chat(handle, pipelined=False)
        await chat.converse(40)
        history = await handle.fetch_history()
        timers = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED]
        cancelled = [
            e for e in history.events if e.event_type == EventType.EVENT_TYPE_TIMER_CANCELED
        ]
        # 80 updates: the first timer still runs; none was restarted per message.
        assert len(timers) == 1 and not cancelled, (len(timers), len(cancelled))

        async def state() -> SessionState:
            result: SessionState = await handle.query(Conversation.STATE, result_type=SessionState)
            return result

        await env.sleep(timedelta(seconds=IDLE * 0.6))
        await chat.post(41)
        await chat.answer(41)
        await env.sleep(timedelta(seconds=IDLE * 0.6))  # past the first timer, not idle
        assert not (await state()).closed
        await env.sleep(timedelta(seconds=IDLE * 0.6))  # now quiet for longer than IDLE
        final = await state()
        assert final.closed
        await handle.result()
