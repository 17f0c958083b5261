"""Record the histories that tests/unit/test_replay.py replays.

Run after a deliberate workflow change (see "Upgrading workflows" in
docs/operations.md for when a change needs a patch gate instead):

    .venv/bin/python -m tests.histories.record [DIR]

DIR defaults to tests/histories/current (the shapes of the code as it is). At a
release, the same recording goes into tests/histories/<release>/ and stays there
while any run of that release may still be open.

Each history is a real run on an embedded dev server, bubblewrap sandboxes and
the scripted model: a task approved after review, a task sent round again with
request-changes then rejected, a cancelled task, a task approved without review
(its gate check runs beside the integration), one subagent run, and a chat session
that delegates, approves and is closed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from temporalio.client import Client, WorkflowHandle, WorkflowUpdateStage
from temporalio.contrib.pydantic import pydantic_data_converter

from entrypoints.devserver import DevServer
from entrypoints.worker import build_workers, run_workers
from switchboard.conversation import NewEntry, PostMessage, PostResult, RecordTurn, SessionState
from switchboard.identity import local_identity
from switchboard.model_server import builtin_scenario, running_model_server
from switchboard.models import (
    ApproveInput,
    Phase,
    RejectInput,
    RequestChangesInput,
    SubtaskSpec,
    TaskRequest,
)
from switchboard.service import TaskService
from switchboard.settings import Settings
from switchboard.wire import Conversation
from testkit import free_port, make_repo, wait_for, wait_for_phase

HERE = Path(__file__).parent
CURRENT = HERE / "current"


SHAPES = (
    "task_planned_reviewed_approved",
    "subagent_worker",
    "task_request_changes_then_rejected",
    "task_cancelled",
    "task_unreviewed_approved",
    "conversation_delegate_chat_approve",
    "conversation_pipelined_records",
)
"""Every workflow shape recorded, one history each."""

_into = CURRENT


async def _save(client: Client, workflow_id: str, name: str) -> None:
    assert name in SHAPES, name
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    document = {"workflow_id": workflow_id, "history": json.loads(history.to_json())}
    _into.mkdir(parents=True, exist_ok=True)
    (_into / f"{name}.json").write_text(json.dumps(document, indent=1))


async def _record(tmp: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    with (
        running_model_server(builtin_scenario()) as model,
        DevServer(tmp / "t.db", address=address, ui_port=None),
    ):
        client = await Client.connect(address, data_converter=pydantic_data_converter)
        settings = Settings(
            data_dir=tmp / "data",
            task_queue="record",
            host_id="recorder",
            model_server_port=model.port,
            sandbox="bwrap",
            worker_metrics_port=0,
            repo_roots=[tmp],
        )
        stop = asyncio.Event()
        worker = asyncio.create_task(run_workers(build_workers(client, settings), stop))
        repo = make_repo(tmp / "repo")
        try:
            await _record_tasks(client, settings, repo)
            await _record_conversation(client, settings, repo)
            await _record_pipelined(client, settings)
        finally:
            stop.set()
            await worker


async def _record_tasks(client: Client, settings: Settings, repo: Path) -> None:
    """A task approved after review, one sent round again then rejected, one cancelled,
    one approved without review."""
    # As the API does it: through the task service with a verified caller, so each
    # task carries its policy and each decision its identity claim.
    service = TaskService(client, settings)
    me = local_identity("recorder")

    async def start(goal: str, **extra: object) -> WorkflowHandle[object, object]:
        request = TaskRequest(goal=goal, repo=str(repo), owner=me.owner, **extra)
        submitted = await service.submit(request, caller=me)
        return client.get_workflow_handle(submitted.task_id)

    approved = await start("Add slugify with tests")
    await wait_for_phase(approved, Phase.AWAITING_APPROVAL)
    await service.approve(approved.id, ApproveInput(), caller=me)
    await approved.result()
    await _save(client, approved.id, "task_planned_reviewed_approved")
    await _save(client, f"{approved.id}-sub1-r1", "subagent_worker")

    looped = await start("Two rounds", subtasks=[SubtaskSpec(title="Only")])
    await wait_for_phase(looped, Phase.AWAITING_APPROVAL)
    await service.request_changes(looped.id, RequestChangesInput(feedback="more"), caller=me)
    await wait_for(
        looped, lambda s: s.round == 2 and s.phase is Phase.AWAITING_APPROVAL, what="round 2"
    )
    await service.reject(looped.id, RejectInput(), caller=me)
    await looped.result()
    await _save(client, looped.id, "task_request_changes_then_rejected")

    cancelled = await start("Cancel me", subtasks=[SubtaskSpec(title="A")])
    await wait_for(cancelled, lambda s: s.phase is Phase.RUNNING, what="running")
    await service.cancel(cancelled.id, caller=me)
    await wait_for_phase(cancelled, Phase.CANCELLED)
    await _save(client, cancelled.id, "task_cancelled")

    unreviewed = await start("No review", subtasks=[SubtaskSpec(title="B")], review=False)
    await wait_for_phase(unreviewed, Phase.AWAITING_APPROVAL)
    await service.approve(unreviewed.id, ApproveInput(), caller=me)
    await unreviewed.result()
    await _save(client, unreviewed.id, "task_unreviewed_approved")


async def _record_conversation(client: Client, settings: Settings, repo: Path) -> None:
    """A chat that delegates, chats while the task runs, approves it, and is closed."""
    from chat_gateway import Gateway

    gateway = Gateway(client, settings)
    try:
        info = await gateway.create_session("recorder", repo=str(repo), title="record")

        async def until(test: Callable[[SessionState], bool], what: str) -> SessionState:
            for _ in range(600):
                state = await gateway.state(info.session_id, "recorder")
                if test(state):
                    return state
                await asyncio.sleep(0.1)
            raise TimeoutError(what)

        await gateway.post(info.session_id, "recorder", "delegate: add a slugify helper")
        await until(lambda s: bool(s.tasks), "the delegated task")
        await gateway.post(info.session_id, "recorder", "what is a slug?")
        await until(
            lambda s: s.tasks[0].phase is Phase.AWAITING_APPROVAL and not s.turns,
            "the approval gate",
        )
        await gateway.post(info.session_id, "recorder", "approve it")
        await until(lambda s: s.tasks[0].phase is Phase.COMPLETED, "the merge")
        await gateway.close_session(info.session_id, "recorder")
        await client.get_workflow_handle(info.session_id).result()
        await _save(client, info.session_id, "conversation_delegate_chat_approve")
    finally:
        await gateway.aclose()


async def _record_pipelined(client: Client, settings: Settings) -> None:
    """Records naming their steps, arriving out of order: two wait for the one before."""
    from chat_gateway import Gateway

    gateway = Gateway(client, settings)
    try:
        info = await gateway.create_session("recorder", title="pipelined")
        handle = client.get_workflow_handle(info.session_id)
        for n in (1, 2):
            post = PostMessage(by="recorder", content=f"message {n}", runner="r")
            await handle.execute_update(Conversation.POST_MESSAGE, post, result_type=PostResult)

        def record(turn: int, step: int, text: str, finish: bool) -> RecordTurn:
            entry = NewEntry(role="assistant", content=text, ends_turn=finish)
            return RecordTurn(turn=turn, runner="r", entries=[entry], step=step, finish=finish)

        waiting = [
            await handle.start_update(
                Conversation.RECORD_TURN, early, wait_for_stage=WorkflowUpdateStage.ACCEPTED
            )
            for early in (record(2, 0, "answer 2", True), record(1, 1, "answer 1", True))
        ]
        await handle.execute_update(Conversation.RECORD_TURN, record(1, 0, "step", False))
        for update in waiting:
            await update.result()
        await gateway.close_session(info.session_id, "recorder")
        await handle.result()
        await _save(client, info.session_id, "conversation_pipelined_records")
    finally:
        await gateway.aclose()


def main() -> None:
    global _into
    if len(sys.argv) > 1:
        _into = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_record(Path(tmp)))


if __name__ == "__main__":
    main()
