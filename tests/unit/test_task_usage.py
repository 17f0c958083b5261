"""What a task records as spent for the per-tenant day's count (`SwitchboardTokens`):
every subagent's and reviewer's reported tokens, over all rounds."""

from __future__ import annotations

from datetime import UTC, datetime

from switchboard.contracts import SubagentResult
from switchboard.models import SubagentState, SubtaskSpec, TaskRequest
from workflows._status import REVIEW_INDEX_BASE, TaskBook

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_tokens_spent_add_up_over_subagents_rounds_and_reviews() -> None:
    book = TaskBook.new("task-1", TaskRequest(goal="g", repo="/r"), T0)
    book.record_plan([SubtaskSpec(title="one"), SubtaskSpec(title="two")], T0)
    one, two = book.status.subagents
    book.record_result(
        one, SubagentResult(index=1, state=SubagentState.DONE, branch="b1", tokens=100), T0
    )
    book.record_result(
        two, SubagentResult(index=2, state=SubagentState.FAILED, branch="b2", tokens=40), T0
    )
    review = SubagentResult(
        index=REVIEW_INDEX_BASE + 1, state=SubagentState.DONE, branch="r", tokens=7
    )
    book.record_review(review, T0)
    assert book.tokens_spent == 147
    # Round 2 reruns the first subagent: its status keeps the larger of the two runs'
    # counts, the task has spent both.
    book.record_result(
        one, SubagentResult(index=1, state=SubagentState.DONE, branch="b1", tokens=30), T0
    )
    assert one.tokens == 100 and book.tokens_spent == 177
