"""A worker interceptor that refuses task updates whose identity claim is not signed
with the claim key (`SWITCHBOARD_CLAIM_KEY`; `switchboard.claim_signing`).

It runs before the update's own validator, so a forged claim is refused before
anything reaches the task's history, exactly like a claim the policy refuses. An
update without a claim is left to the validator (which refuses it on a task with a
policy). Only `DelegatedTaskWorkflow`'s updates are checked.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    HandleUpdateInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from switchboard.claim_signing import verify_claim
from switchboard.identity import Claimed
from switchboard.wire import Errors, Workflows

__all__ = ["ClaimCheck"]


class ClaimCheck(Interceptor):
    """Give to the worker that runs `DelegatedTaskWorkflow` (`interceptors=[...]`)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        key = self._key

        class _Inbound(WorkflowInboundInterceptor):
            def handle_update_validator(self, input: HandleUpdateInput) -> None:
                _check(key, input)
                super().handle_update_validator(input)

        return _Inbound


def _check(key: bytes, input: HandleUpdateInput) -> None:
    info = workflow.info()
    if info.workflow_type != Workflows.TASK or not input.args:
        return
    claim = input.args[0]
    if not isinstance(claim, Claimed) or claim.actor is None:
        return
    if not verify_claim(
        key, info.workflow_id, input.id, input.update, claim.actor, claim.signature
    ):
        raise ApplicationError(
            f"{input.update} refused: the identity claim is not signed with this "
            "deployment's claim key (SWITCHBOARD_CLAIM_KEY); act through the Switchboard API",
            type=Errors.FORBIDDEN,
            non_retryable=True,
        )
