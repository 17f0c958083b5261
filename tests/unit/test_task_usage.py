"""What a task records as spent for the per-tenant day's count (`SwitchboardTokens`):
every subagent's and reviewer's reported tokens, over all rounds, even where the
subagent's own status keeps only the larger of two runs' counts."""

from __future__ import annotations

from datetime import UTC, datetime

from switchboard.contracts import SubagentResult
from switchboard.models import SubagentState, SubtaskSpec, TaskRequest
from workflows._status import REVIEW_INDEX_BASE, TaskBook
from workflows._usage import Usage

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _result(index: int, tokens: int) -> SubagentResult:
    return SubagentResult(index=index, state=SubagentState.DONE, branch="b", tokens=tokens)


def test_tokens_spent_add_up_over_subagents_rounds_and_reviews() -> None:
    book = TaskBook.new("task-1", TaskRequest(goal="g", repo="/r"), T0)
    book.record_plan([SubtaskSpec(title="one"), SubtaskSpec(title="two")], T0)
    usage = Usage()
    one, two = book.status.subagents
    for status, result in ((one, _result(1, 100)), (two, _result(2, 40))):
        book.record_result(status, result, T0)
        usage.add(result)
    usage.add(_result(REVIEW_INDEX_BASE + 1, 7))
    assert usage.tokens == 147
    # Round 2 reruns the first subagent with fewer tokens: its status keeps 100, the
    # task has spent both runs'.
    book.record_result(one, _result(1, 30), T0)
    usage.add(_result(1, 30))
    assert one.tokens == 100 and usage.tokens == 177
