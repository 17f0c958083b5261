"""The task policy the workflow checks claims against, the four-eyes setting, the
identity claim the service fills and the update id of an idempotency key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from switchboard._decisions import claimed, policy_for, update_id
from switchboard.identity import Action, Identity, Role, TaskPolicy
from switchboard.models import ApproveInput, TaskRequest
from switchboard.settings import Settings


def who(subject: str, tenant: str, *roles: Role) -> Identity:
    return Identity(subject=subject, tenant=tenant, roles=frozenset(roles), via="oidc")


ANN = who("ann", "acme", Role.REQUESTER, Role.APPROVER)
RAY = who("ray", "acme", Role.REQUESTER)
ABE = who("abe", "acme", Role.APPROVER)
ADA = who("ada", "acme", Role.TENANT_ADMIN)
GUS = who("gus", "globex", Role.APPROVER, Role.TENANT_ADMIN)
ROOT = who("root", "ops", Role.ADMIN)
POLICY = TaskPolicy(owner=ANN.owner, tenant="acme", four_eyes=True, submitter=ANN)


def test_a_decision_needs_the_approver_role_in_the_tenant() -> None:
    assert POLICY.refusal(ABE, Action.DECIDE, approving=True) is None
    assert POLICY.refusal(ADA, Action.DECIDE, approving=True) is None
    assert POLICY.refusal(ROOT, Action.DECIDE, approving=True) is None
    refused = POLICY.refusal(RAY, Action.DECIDE, approving=True)
    assert refused is not None and "'approver'" in refused
    other = POLICY.refusal(GUS, Action.DECIDE)
    assert other is not None and "another tenant" in other
    missing = POLICY.refusal(None, Action.DECIDE)
    assert missing is not None and "no identity claim" in missing


def test_four_eyes_stops_only_the_submitter_approving() -> None:
    refused = POLICY.refusal(ANN, Action.DECIDE, approving=True)
    assert refused is not None and "four-eyes" in refused
    assert POLICY.refusal(ANN, Action.DECIDE) is None  # rejecting her own is fine
    relaxed = POLICY.model_copy(update={"four_eyes": False})
    assert relaxed.refusal(ANN, Action.DECIDE, approving=True) is None


def test_cancel_and_steer_are_the_owners_or_a_tenant_admins() -> None:
    assert POLICY.refusal(ANN, Action.CANCEL) is None
    assert POLICY.refusal(ADA, Action.STEER) is None
    refused = POLICY.refusal(RAY, Action.CANCEL)
    assert refused is not None and "'tenant-admin'" in refused
    assert POLICY.refusal(GUS, Action.CANCEL) is not None


def test_four_eyes_tenants_setting() -> None:
    some = Settings(four_eyes_tenants="acme,initech", _env_file=None)
    assert some.four_eyes_for("acme") and some.four_eyes_for("initech")
    assert not some.four_eyes_for("globex")
    assert Settings(four_eyes_tenants="*", _env_file=None).four_eyes_for("globex")
    assert not Settings(_env_file=None).four_eyes_for("acme")
    with pytest.raises(ValidationError):
        Settings(four_eyes_tenants="acme, globex", _env_file=None)


def test_the_service_fills_the_claim_and_the_policy_from_the_verified_caller() -> None:
    forged = ApproveInput(by="acme/abe", actor=ABE)
    assert claimed(forged, ANN).actor == ANN and claimed(forged, ANN).by == "acme/ann"
    settings = Settings(four_eyes_tenants="acme", _env_file=None)
    sent = TaskRequest(goal="g", repo="/r", owner=ANN.owner, policy=POLICY)
    assert policy_for(sent, None, settings).policy is None  # nothing verified: no policy
    policy = policy_for(sent.model_copy(update={"policy": None}), ANN, settings).policy
    assert policy == TaskPolicy(owner="acme/ann", tenant="acme", four_eyes=True, submitter=ANN)


def test_an_idempotency_key_is_one_update_per_caller_and_action() -> None:
    assert update_id("approve", ABE, None) is None
    first = update_id("approve", ABE, "k1")
    assert first == update_id("approve", ABE, "k1")
    assert first != update_id("approve", ADA, "k1")
    assert first != update_id("reject", ABE, "k1")
    assert first != update_id("approve", ABE, "k2")
