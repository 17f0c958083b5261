"""What a task has spent, recorded where visibility can count it (per-tenant limits).

The task workflow sets `SwitchboardTokens` together with `SwitchboardPhase` at each
phase change, so a day's spend per tenant is one visibility listing away from any API
process (`switchboard.limits`), with no extra history event. Histories recorded before
the attribute existed replay unchanged (`Patches.TOKENS_ATTRIBUTE`).
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

with workflow.unsafe.imports_passed_through():
    from switchboard.contracts import SubagentResult
    from switchboard.models import Phase
    from switchboard.wire import Patches, SearchAttributes

__all__ = ["Usage", "phase_attributes"]


class Usage:
    """What the task has spent: every subagent's and reviewer's reported tokens, all
    rounds (from their results, so a replay counts the same)."""

    def __init__(self) -> None:
        self.tokens = 0

    def add(self, result: SubagentResult) -> None:
        self.tokens += result.tokens


def phase_attributes(phase: Phase, tokens: int) -> list[SearchAttributeUpdate[Any]]:
    """The search attributes to upsert when the task enters `phase`."""
    updates: list[SearchAttributeUpdate[Any]] = [SearchAttributes.PHASE.value_set(phase.value)]
    if workflow.patched(Patches.TOKENS_ATTRIBUTE):
        updates.append(SearchAttributes.TOKENS.value_set(tokens))
    return updates
