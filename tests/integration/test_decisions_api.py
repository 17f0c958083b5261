"""Decisions through the API: four-eyes per tenant (403 at the API), the audit trail
(`GET /v1/tasks/{id}/audit`, scoped like every read), and an approval that never
vanishes (#12 item 9): with the worker down it answers 503 within the configured bound,
and a retry with the same Idempotency-Key once the worker is back is applied once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from api.deps import USER_HEADER
from entrypoints.worker import build_workers, run_workers
from switchboard.models import Phase
from switchboard.settings import Settings
from testkit import history_event_types
from tests.integration.test_api import ALICE, BOB, http, submit, wait_status

pytestmark = pytest.mark.integration

__all__ = ["http"]  # the API fixture, served with this module's settings

UPDATE_WAIT = 2.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"four_eyes_tenants": "alice", "update_wait_seconds": UPDATE_WAIT}
    )


async def test_four_eyes_refuses_the_submitter_and_the_audit_says_who(
    http: httpx.AsyncClient, worker: None, repo: Path
) -> None:
    task_id = await submit(http, repo)  # by alice, whose tenant has four-eyes on
    await wait_status(http, task_id, Phase.AWAITING_APPROVAL)

    own = await http.post(f"/v1/tasks/{task_id}/approve", headers=ALICE)
    assert own.status_code == 403, own.text
    assert "four-eyes" in own.json()["detail"] and "another approver" in own.json()["detail"]

    assert (await http.get(f"/v1/tasks/{task_id}/audit", headers=BOB)).status_code == 404
    rejected = await http.post(
        f"/v1/tasks/{task_id}/reject", json={"comment": "not now"}, headers=ALICE
    )
    assert rejected.status_code == 200, rejected.text
    await wait_status(http, task_id, Phase.REJECTED)

    audit = await http.get(f"/v1/tasks/{task_id}/audit", headers=ALICE)
    assert audit.status_code == 200, audit.text
    entries = audit.json()["entries"]
    assert [(e["action"], e["subject"], e["tenant"], e["via"]) for e in entries] == [
        ("submitted", "alice", "alice", "local"),
        ("rejected", "alice", "alice", "local"),
    ]
    assert entries[1]["detail"] == "not now"


async def test_an_approval_with_the_worker_down_is_bounded_and_applied_once(
    http: httpx.AsyncClient, client: Client, settings: Settings, repo: Path
) -> None:
    carol = {USER_HEADER: "carol"}  # her tenant has no four-eyes: she may approve her own
    stop = asyncio.Event()
    running = asyncio.create_task(run_workers(build_workers(client, settings), stop))
    body = {"goal": "Add a helper", "repo": str(repo), "subtasks": [{"title": "Helper"}]}
    created = await http.post("/v1/tasks", json={**body, "review": False}, headers=carol)
    assert created.status_code == 201, created.text
    task_id = created.json()["task_id"]
    await wait_status(http, task_id, Phase.AWAITING_APPROVAL, headers=carol)
    stop.set()
    await running

    keyed = {"Idempotency-Key": "approve-once-1", **carol}
    started = time.monotonic()
    down = await http.post(f"/v1/tasks/{task_id}/approve", headers=keyed)
    took = time.monotonic() - started
    assert down.status_code == 503, down.text
    assert took < UPDATE_WAIT + 5, f"answered after {took:.1f} s"
    assert "Idempotency-Key" in down.json()["detail"] and "not confirmed" in down.json()["detail"]

    stop = asyncio.Event()
    running = asyncio.create_task(run_workers(build_workers(client, settings), stop))
    try:
        # Whether the first try was delivered when the worker came back or not, the
        # retry is the same update: applied once (200), or the task already ended with
        # it (409 saying so).
        retried = await http.post(f"/v1/tasks/{task_id}/approve", headers=keyed)
        assert retried.status_code in (200, 409), retried.text
        if retried.status_code == 409:
            assert "completed" in retried.json()["detail"]
        final = await wait_status(http, task_id, Phase.COMPLETED, headers=carol)
        assert [(a.decision, a.by) for a in final.approvals] == [("approved", "carol")]
        kinds = await history_event_types(client, task_id)
        assert sum("update_accepted" in kind for kind in kinds) == 1
    finally:
        stop.set()
        await running
