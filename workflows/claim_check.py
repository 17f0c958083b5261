"""A worker interceptor that refuses task updates and steers whose identity claim is
not signed with the claim key (`SWITCHBOARD_CLAIM_KEY`; `switchboard.claim_signing`).

It runs before the update's own validator, so a forged claim is refused before
anything reaches the task's history, exactly like a claim the policy refuses. An
update without a claim is left to the validator (which refuses it on a task with a
policy). A steer is a signal, which cannot be refused: a steer whose claim is not
signed (over its steer id and guidance) loses the claim, so the task records it as
refused for want of one and passes nothing on. Only `DelegatedTaskWorkflow` is checked.
"""

from __future__ import annotations

import dataclasses

from temporalio import workflow
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    HandleSignalInput,
    HandleUpdateInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from switchboard.claim_signing import steer_signing_id, verify_claim
from switchboard.identity import Claimed
from switchboard.models import SteerInput
from switchboard.wire import Errors, Signals, Workflows

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

            async def handle_signal(self, input: HandleSignalInput) -> None:
                await super().handle_signal(_unsigned_steer_unclaimed(key, input))

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


def _unsigned_steer_unclaimed(key: bytes, input: HandleSignalInput) -> HandleSignalInput:
    info = workflow.info()
    if info.workflow_type != Workflows.TASK or input.signal != Signals.STEER or not input.args:
        return input
    steer = input.args[0]
    if not isinstance(steer, SteerInput) or steer.actor is None:
        return input
    if steer.steer_id is not None and verify_claim(
        key,
        info.workflow_id,
        steer_signing_id(steer.steer_id, steer.guidance),
        Signals.STEER,
        steer.actor,
        steer.signature,
    ):
        return input
    workflow.logger.warning("a steer's identity claim is not signed with the claim key: dropped")
    unclaimed = steer.model_copy(update={"actor": None, "signature": None})
    return dataclasses.replace(input, args=[unclaimed, *input.args[1:]])
