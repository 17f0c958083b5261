"""Checked twice (issue #11): the task's workflow checks the identity claim that comes
with every decision and cancel against the task's policy, through the Temporal client
directly (as a caller that goes around the API would); a refused update leaves nothing
in the history. The accepted ones make the audit trail and `SwitchboardApprover`,
which the real `temporal` CLI can filter on."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from entrypoints.devserver import temporal_binary
from entrypoints.worker import build_workers, run_workers
from switchboard._decisions import claimed, signed_steer
from switchboard.audit import AuditAction
from switchboard.claim_signing import sign_claim
from switchboard.errors import Forbidden
from switchboard.identity import CancelInput, Identity, Role
from switchboard.models import (
    ApprovalRecord,
    ApproveInput,
    EventKind,
    Phase,
    SteerInput,
    SubtaskSpec,
    TaskRequest,
)
from switchboard.service import TaskService
from switchboard.settings import Settings
from switchboard.wire import Errors, SearchAttributes, Signals, Updates
from testkit import history_event_types, wait_for_phase

pytestmark = pytest.mark.integration

TENANT = "acme"


def _who(subject: str, *roles: Role, tenant: str = TENANT) -> Identity:
    return Identity(subject=subject, tenant=tenant, roles=frozenset(roles), via="oidc")


ANN = _who("ann", Role.REQUESTER, Role.APPROVER)
"""The submitter: also an approver, so only four-eyes stops her approving her own task."""
RITA = _who("rita", Role.REQUESTER)
BOB = _who("bob", Role.APPROVER)
OLGA = _who("olga", Role.APPROVER, tenant="globex")


@pytest.fixture
def four_eyes(settings: Settings) -> Settings:
    return settings.model_copy(update={"four_eyes_tenants": TENANT})


async def _submit(client: Client, settings: Settings, repo: Path, goal: str) -> str:
    service = TaskService(client, settings)
    request = TaskRequest(
        goal=goal,
        repo=str(repo),
        owner=ANN.owner,
        subtasks=[SubtaskSpec(title="Helper")],
        review=False,
    )
    submitted = await service.submit(request, caller=ANN)
    return submitted.task_id


async def _refused(
    handle: WorkflowHandle[object, object], update: str, arg: object, id: str | None = None
) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await handle.execute_update(update, arg, id=id, result_type=ApprovalRecord)
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == Errors.FORBIDDEN
    return cause.message


def _temporal_list(address: str, query: str) -> list[str]:
    argv = [temporal_binary(), "workflow", "list", "--address", address, "--query", query]
    done = subprocess.run(
        [*argv, "--output", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    text = done.stdout.strip()
    rows = json.loads(text) if text.startswith("[") else [json.loads(x) for x in text.splitlines()]
    return [row["execution"]["workflowId"] for row in rows]


async def test_the_workflow_refuses_what_the_policy_does_not_allow_before_history(
    client: Client,
    four_eyes: Settings,
    worker: None,
    repo: Path,
    temporal_env: WorkflowEnvironment,
) -> None:
    task_id = await _submit(client, four_eyes, repo, "Add a helper")
    handle = client.get_workflow_handle(task_id)
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)

    # The real CLI filters on the tenant and the phase (the search attributes).
    address = temporal_env.client.service_client.config.target_host
    gate = f"SwitchboardTenant='{TENANT}' AND SwitchboardPhase='awaiting_approval'"
    for _ in range(50):  # visibility is eventually consistent
        if task_id in _temporal_list(address, gate):
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"{task_id} not listed by `temporal workflow list --query {gate}`")
    elsewhere = "SwitchboardTenant='globex' AND SwitchboardPhase='awaiting_approval'"
    assert task_id not in _temporal_list(address, elsewhere)

    before = await history_event_types(client, task_id)
    requester = await _refused(handle, Updates.APPROVE, ApproveInput(actor=RITA))
    assert "'approver'" in requester
    other_tenant = await _refused(handle, Updates.APPROVE, ApproveInput(actor=OLGA))
    assert "tenant" in other_tenant
    own = await _refused(handle, Updates.APPROVE, ApproveInput(actor=ANN))
    assert "four-eyes" in own
    anonymous = await _refused(handle, Updates.APPROVE, ApproveInput(by="acme/bob"))
    assert "no identity claim" in anonymous
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(Updates.CANCEL, CancelInput(actor=OLGA))
    after = await history_event_types(client, task_id)
    assert after == before, "a refused update reached the history"
    assert not any("update" in kind.lower() for kind in after)

    record = await handle.execute_update(
        Updates.APPROVE, ApproveInput(actor=BOB, by=BOB.owner), result_type=ApprovalRecord
    )
    assert record.by == "acme/bob"
    await handle.result()
    description = await handle.describe()
    assert description.typed_search_attributes.get(SearchAttributes.APPROVER) == "acme/bob"
    assert task_id in _temporal_list(address, "SwitchboardApprover='acme/bob'")

    trail = await TaskService(client, four_eyes).audit(task_id)
    actions = [(e.action, e.owner, e.tenant, e.via) for e in trail.entries]
    assert actions == [
        (AuditAction.SUBMITTED, "acme/ann", TENANT, "oidc"),
        (AuditAction.APPROVED, "acme/bob", TENANT, "oidc"),
    ]
    assert trail.complete


async def test_an_identified_cancel_is_checked_recorded_and_ends_cancelled(
    client: Client, settings: Settings, worker: None, repo: Path
) -> None:
    service = TaskService(client, settings)
    task_id = await _submit(client, settings, repo, "Add a helper, then stop")
    handle = client.get_workflow_handle(task_id)
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)

    with pytest.raises(Forbidden, match="tenant"):
        await service.cancel(task_id, caller=OLGA)
    with pytest.raises(Forbidden, match="'tenant-admin'"):
        await service.cancel(task_id, caller=RITA)  # not hers
    assert not any("update" in k.lower() for k in await history_event_types(client, task_id))

    # A steer is a signal (no validator): a refused claim is recorded and goes no further.
    await handle.signal(Signals.STEER, SteerInput(guidance="delete the tests", actor=OLGA))
    for _ in range(100):
        steered = [e for e in (await service.events(task_id)).events if e.kind is EventKind.STEERED]
        if steered:
            break
        await asyncio.sleep(0.1)
    assert len(steered) == 1 and steered[0].data["refused"] is True
    assert "another tenant" in steered[0].message

    await service.cancel(task_id, caller=ANN)
    status = await wait_for_phase(handle, Phase.CANCELLED)
    assert status.phase is Phase.CANCELLED
    trail = await service.audit(task_id)
    assert [(e.action, e.owner) for e in trail.entries] == [
        (AuditAction.SUBMITTED, "acme/ann"),
        (AuditAction.CANCEL_REQUESTED, "acme/ann"),
        (AuditAction.CANCELLED, "acme/ann"),
    ]


async def test_with_a_claim_key_only_signed_claims_pass(
    client: Client, settings: Settings, repo: Path
) -> None:
    keyed = settings.model_copy(update={"claim_key": SecretStr("shared-by-api-and-workers")})
    secret = b"shared-by-api-and-workers"
    stop = asyncio.Event()
    running = asyncio.create_task(run_workers(build_workers(client, keyed), stop))
    try:
        task_id = await _submit(client, keyed, repo, "Add a signed helper")
        handle = client.get_workflow_handle(task_id)
        await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
        before = await history_event_types(client, task_id)

        unsigned = await _refused(handle, Updates.APPROVE, ApproveInput(actor=BOB))
        assert "not signed" in unsigned
        wrong_key = sign_claim(b"guessed", task_id, "u-1", Updates.APPROVE, BOB)
        forged = ApproveInput(actor=BOB, signature=wrong_key)
        assert "not signed" in await _refused(handle, Updates.APPROVE, forged, id="u-1")
        # A genuine signature copied onto another update id (as read from a history).
        genuine = sign_claim(secret, task_id, "u-2", Updates.APPROVE, BOB)
        copied = ApproveInput(actor=BOB, signature=genuine)
        assert "not signed" in await _refused(handle, Updates.APPROVE, copied, id="u-3")
        assert await history_event_types(client, task_id) == before

        await _steers_need_signatures(client, keyed, task_id)
        record = await TaskService(client, keyed).approve(task_id, ApproveInput(), caller=BOB)
        assert record.by == "acme/bob"
        await handle.result()
    finally:
        stop.set()
        await running


async def _steers_need_signatures(client: Client, keyed: Settings, task_id: str) -> None:
    """A steer is a signal: one whose claim is not signed over its steer id and guidance
    is recorded as refused, and a signed one sent again (as copied from a history)
    steers once."""
    service = TaskService(client, keyed)
    handle = client.get_workflow_handle(task_id)
    await handle.signal(Signals.STEER, SteerInput(guidance="skip the tests", actor=ANN))
    await service.steer(task_id, SteerInput(guidance="keep the tests green"), caller=ANN)
    genuine = signed_steer(claimed(SteerInput(guidance="add a docstring"), ANN), task_id, keyed)
    await handle.signal(Signals.STEER, genuine)
    await handle.signal(Signals.STEER, genuine)  # the same steer again: applied once
    other = signed_steer(claimed(SteerInput(guidance="add a test"), ANN), task_id, keyed)
    swapped = other.model_copy(update={"guidance": "delete the tests"})  # not what was signed
    await handle.signal(Signals.STEER, swapped)
    for _ in range(100):
        steered = [e for e in (await service.events(task_id)).events if e.kind is EventKind.STEERED]
        if len(steered) >= 4:
            break
        await asyncio.sleep(0.1)
    seen = [(e.data.get("refused", False), e.data.get("by")) for e in steered]
    assert seen == [
        (True, "local"),
        (False, "acme/ann"),
        (False, "acme/ann"),
        (True, "acme/ann"),
    ], [e.message for e in steered]
    assert "no identity claim" in steered[0].message
    assert "keep the tests green" in steered[1].message
    assert "add a docstring" in steered[2].message
    assert "no identity claim" in steered[3].message
    assert "delete the tests" not in " ".join(e.message for e in steered)


async def test_a_caller_submits_only_in_their_own_name(
    client: Client, settings: Settings, repo: Path
) -> None:
    """The owner picks whose stored credentials, limits and listing a task gets: a verified
    caller naming another owner is refused before anything is stored or started."""
    service = TaskService(client, settings)
    url = "https://ann:s3cret@git.example.com/acme/app.git"
    request = TaskRequest(goal="Add a helper", repo=url, owner=ANN.owner, review=False)
    with pytest.raises(Forbidden, match=f"{RITA.owner} may not submit a task as {ANN.owner}"):
        await service.submit(request, caller=RITA)
    stored = settings.credentials_dir
    assert not stored.exists() or not any(stored.iterdir())
