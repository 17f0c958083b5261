"""The workflows' pure bookkeeping: report batching, the subagent loop state, the task's book."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from temporalio.exceptions import ApplicationError

from switchboard import prompts
from switchboard.contracts import (
    ChatToolCall,
    LlmTurnResult,
    MergeOutcome,
    PreparedRepo,
    Progress,
    StepResult,
    SubagentResult,
    ToolOutcome,
    Usage,
)
from switchboard.models import (
    Budget,
    DiffRequest,
    DiffStat,
    EventKind,
    MergeResult,
    Phase,
    Role,
    SubagentState,
    SubtaskSpec,
    TaskRequest,
)
from switchboard.tools import CheckedCall, DeniedCall, DenyReason, ToolName
from switchboard.wire import Errors
from workflows._progress import ProgressBatcher, Report
from workflows._status import TaskBook, failure_message
from workflows._steps import StepEnd, SubagentRun, describe_step, excerpt

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def step_report(name: str) -> Report:
    return Report("step", name, {"tools": [{"tool": name, "ok": True, "limit": None}]})


# ---- progress batching -----------------------------------------------------------------


def test_steps_a_second_apart_go_out_one_by_one() -> None:
    batcher = ProgressBatcher(timedelta(seconds=1))
    assert batcher.offer(step_report("a"), at(0)) == [step_report("a")]
    assert batcher.offer(step_report("b"), at(1.5)) == [step_report("b")]
    assert batcher.holding == 0


def test_fast_steps_are_held_and_leave_as_one_report() -> None:
    batcher = ProgressBatcher(timedelta(seconds=1))
    batcher.offer(step_report("a"), at(0))
    assert batcher.offer(step_report("b"), at(0.2)) == []
    assert batcher.offer(step_report("c"), at(0.4)) == []
    assert batcher.holding == 2
    [sent] = batcher.offer(step_report("d"), at(1.3))
    assert sent.message == "3 steps: b; c; d"
    assert sent.data["batched_steps"] == 3
    assert [t["tool"] for t in sent.data["tools"]] == ["b", "c", "d"]  # type: ignore[attr-defined]
    assert batcher.holding == 0


def test_another_kind_releases_the_held_steps_first() -> None:
    batcher = ProgressBatcher(timedelta(seconds=1))
    batcher.offer(step_report("a"), at(0))
    batcher.offer(step_report("b"), at(0.1))
    denied = Report("denied", "run: not allowed", {"tool": "run"})
    held, then = batcher.offer(denied, at(0.2))
    assert (
        held.kind == "step"
        and held.message == "b"
        and held.data == {"tools": [{"tool": "b", "ok": True, "limit": None}]}
    )
    assert then == denied


def test_release_sends_what_is_held_and_nothing_twice() -> None:
    batcher = ProgressBatcher(timedelta(seconds=1))
    batcher.offer(step_report("a"), at(0))
    batcher.offer(step_report("b"), at(0.1))
    assert [r.message for r in batcher.release()] == ["b"]
    assert batcher.release() == []


# ---- the subagent loop -------------------------------------------------------------------


def new_run() -> SubagentRun:
    result = SubagentResult(index=1, state=SubagentState.RUNNING, branch="b")
    return SubagentRun(result=result, worktree_path="/w", started=T0)


def turn(*calls: str, content: str | None = None, tokens: int = 10) -> LlmTurnResult:
    return LlmTurnResult(
        content=content,
        tool_calls=[ChatToolCall(id=c, name=c.split("-")[0]) for c in calls],
        usage=Usage(total_tokens=tokens),
        transcript_length=7,
    )


def test_a_step_with_tools_books_counters_and_the_answers() -> None:
    run = new_run()
    step = StepResult(
        turn=turn("run-1", "write_file-2"),
        outcomes=[
            ToolOutcome(call_id="run-1", name="run", ok=False, output="boom", limit="timeout")
        ],
        denied=[
            DeniedCall(
                call_id="write_file-2",
                name="write_file",
                reason=DenyReason.NOT_ALLOWED,
                message="no",
            )
        ],
    )
    assert run.absorb(step) is StepEnd.GO_ON
    assert (run.result.steps, run.result.tokens, run.result.tool_calls) == (1, 10, 1)
    assert run.transcript_length == 7
    assert [(m.tool_call_id, m.content) for m in run.pending] == [
        ("run-1", "boom"),
        ("write_file-2", "error: no"),
    ]
    # A failed call says why: the head of its output, in the step's one line.
    assert describe_step(step.turn, run.tools_used) == "run failed (timeout): boom"
    assert run.tools_used[0]["excerpt"] == "boom"


def test_a_tool_excerpt_is_bounded_and_shows_head_and_tail_visibly() -> None:
    output = "start\x1b[31m" + "x" * 5000 + "the real error"
    cut = excerpt(output)
    assert len(cut) < 500
    assert cut.startswith("start␛[31m") and cut.endswith("the real error")
    assert "chars cut" in cut
    assert excerpt("short") == "short"


def test_finish_ends_the_loop_with_the_summary_and_verdict() -> None:
    run = new_run()
    finish = CheckedCall(
        call_id="finish-1",
        name=ToolName.FINISH,
        arguments={"summary": "done it", "verdict": "approve"},
    )
    assert run.absorb(StepResult(turn=turn("finish-1"), finish=finish)) is StepEnd.FINISHED
    assert (run.result.summary, run.result.verdict) == ("done it", "approve")
    assert run.pending[0].content == "finished"


def test_no_tool_call_is_nudged_once_then_taken_as_the_summary() -> None:
    run = new_run()
    assert run.absorb(StepResult(turn=turn(content="hm"))) is StepEnd.NUDGED
    assert run.nudged and run.pending[0].content == prompts.NO_TOOL_CALL_NUDGE
    assert run.absorb(StepResult(turn=turn(content="my answer"))) is StepEnd.GAVE_UP
    assert run.result.summary == "my answer" and run.result.steps == 2


@pytest.mark.parametrize(
    ("steps", "tokens", "seconds", "spent"),
    [
        (0, 0, 0, ""),
        (3, 0, 0, "3 steps"),
        (0, 500, 0, "500 tokens"),
        (0, 0, 60, "60 s of wall time"),
    ],
)
def test_budgets(steps: int, tokens: int, seconds: int, spent: str) -> None:
    run = new_run()
    run.result.steps, run.result.tokens = steps, tokens
    budget = Budget(max_steps=3, max_tokens=500, max_wall_seconds=60)
    assert run.budget_spent(budget, at(seconds)) == spent


def test_a_worker_that_never_ran_a_tool_failed_and_says_why() -> None:
    # Every call refused (malformed, say) until the budget ran out: no work, not "done".
    idle = new_run()
    idle.result.denied_calls = 4
    idle.result.error = "budget spent: 4 steps"
    idle.fail_if_idle()
    assert idle.result.state is SubagentState.FAILED
    assert idle.result.error == "no tool call ran (4 refused); budget spent: 4 steps"
    # One that ran tools keeps its own ending.
    worked = new_run()
    worked.result.tool_calls = 1
    worked.result.state = SubagentState.BUDGET_EXHAUSTED
    worked.fail_if_idle()
    assert worked.result.state is SubagentState.BUDGET_EXHAUSTED


def test_a_checkpoint_resumes_where_the_run_stopped() -> None:
    run = new_run()
    run.absorb(StepResult(turn=turn(content="hm")))
    resumed = SubagentRun.resumed(run.checkpoint())
    assert resumed.runs == 2 and resumed.nudged and resumed.transcript_length == 7
    assert resumed.result == run.result and resumed.pending == run.pending


# ---- the task's book ---------------------------------------------------------------------


def new_book() -> TaskBook:
    book = TaskBook.new("task-1", TaskRequest(goal="g", repo="/r"), T0)
    book.record_plan([SubtaskSpec(title="one"), SubtaskSpec(title="look", role=Role.EXPLORER)], T0)
    return book


def test_events_and_status_move_together() -> None:
    book = new_book()
    book.set_phase(Phase.RUNNING, "round 1", at(1))
    assert book.status.phase is Phase.RUNNING and book.status.updated_at == at(1)
    assert book.status.next_offset == 2
    assert [e.kind for e in book.page(0, 10).events] == [EventKind.PLAN, EventKind.PHASE]
    assert [s.branch for s in book.status.subagents] == [
        "switchboard/task-1/1",
        "switchboard/task-1/2",
    ]


def test_progress_updates_counters_and_logs_steps_and_refusals() -> None:
    book = new_book()
    book.record_progress(Progress(index=1, kind="step", message="run ok", steps=3), at(1))
    book.record_progress(Progress(index=1, kind="denied", message="no", denied_calls=1), at(2))
    book.record_progress(Progress(index=9, kind="step", message="nobody"), at(3))
    status = book.status.subagents[0]
    assert status.denied_calls == 1
    kinds = [e.kind for e in book.page(0, 10).events]
    assert kinds == [EventKind.PLAN, EventKind.SUBAGENT_STEP, EventKind.TOOL_DENIED]


def test_a_result_never_lowers_the_counters_the_progress_reported() -> None:
    book = new_book()
    status = book.status.subagents[0]
    book.record_progress(Progress(index=1, kind="step", message="s", steps=5, tokens=99), at(1))
    result = SubagentResult(index=1, state=SubagentState.DONE, branch="b", steps=4, tokens=120)
    book.record_result(status, result, at(2))
    assert (status.state, status.steps, status.tokens) == (SubagentState.DONE, 5, 120)
    assert status.finished_at == at(2)


def test_only_workers_that_did_not_fail_are_integrated() -> None:
    book = new_book()
    assert book.worker_branches() == ["switchboard/task-1/1"]
    book.status.subagents[0].state = SubagentState.FAILED
    assert book.worker_branches() == []


def test_a_decision_needs_the_gate_and_counts_once() -> None:
    book = new_book()
    with pytest.raises(ApplicationError) as early:
        book.require_awaiting()
    assert early.value.type == Errors.WRONG_PHASE
    book.set_phase(Phase.AWAITING_APPROVAL, "waiting", at(1))
    book.require_awaiting()
    record = book.decide("approved", "ann", "fine", at(2), {})
    assert book.decision == record and book.status.approvals == [record]
    with pytest.raises(ApplicationError):
        book.require_awaiting()


def test_conflicting_branches_cannot_be_approved() -> None:
    book = new_book()
    book.status.diff_stat = DiffStat(files_changed=1)
    book.require_approvable(None, drop_failed=False)
    book.require_approvable(MergeResult(merged=True, branch="t"), drop_failed=False)
    with pytest.raises(ApplicationError, match=r"conflict in a\.py"):
        book.require_approvable(
            MergeResult(merged=False, branch="t", conflicts=["a.py"]), drop_failed=False
        )


def test_an_empty_change_cannot_be_approved() -> None:
    book = new_book()
    book.status.diff_stat = DiffStat(files_changed=0)
    with pytest.raises(ApplicationError, match="combined change is empty"):
        book.require_approvable(MergeResult(merged=True, branch="t"), drop_failed=True)


def two_workers() -> TaskBook:
    book = TaskBook.new("task-1", TaskRequest(goal="g", repo="/r"), T0)
    book.record_plan(
        [
            SubtaskSpec(title="one"),
            SubtaskSpec(title="two"),
            SubtaskSpec(title="look", role=Role.EXPLORER),
        ],
        T0,
    )
    for status in book.status.subagents:
        status.state = SubagentState.DONE
    book.status.diff_stat = DiffStat(files_changed=1)
    return book


def test_a_round_without_a_successful_worker_fails_naming_each() -> None:
    book = two_workers()
    for status, why in zip(book.status.subagents[:2], ["401", "500"], strict=True):
        status.state, status.error = SubagentState.FAILED, why
    with pytest.raises(ApplicationError) as failed:
        book.judge_round()  # the explorer succeeded: still no worker did
    assert failed.value.non_retryable
    assert failed.value.message == "no worker succeeded: #1 one failed (401); #2 two failed (500)"


def test_a_failed_worker_makes_the_gate_partial_until_dropped_or_retried() -> None:
    book = two_workers()
    book.status.subagents[1].state = SubagentState.FAILED
    book.status.subagents[1].error = "malformed tool calls"
    book.judge_round()
    assert book.status.partial == [2]
    book.ask_for_approval(at(1), conflicted=False)
    asked = book.page(0, 10).events[-1]
    assert "#2 two failed (malformed tool calls)" in asked.message
    assert asked.data["partial"] == [{"index": 2, "error": "malformed tool calls"}]
    with pytest.raises(ApplicationError, match="drop_failed"):
        book.require_approvable(None, drop_failed=False)
    book.require_approvable(None, drop_failed=True)
    book.status.subagents[1].state = SubagentState.DONE
    book.judge_round()
    assert book.status.partial == []
    book.require_approvable(None, drop_failed=False)


def test_a_second_decision_is_told_who_decided() -> None:
    book = new_book()
    book.set_phase(Phase.AWAITING_APPROVAL, "waiting", at(1))
    book.decide("approved", "ann", "", at(2), {})
    with pytest.raises(ApplicationError, match="already decided in round 1: approved by ann"):
        book.require_awaiting()


def test_a_cancel_says_whether_the_branch_was_published() -> None:
    book = new_book()
    book.record_cancel(at(1))
    assert "nothing was published" in book.page(0, 10).events[-1].message
    book.note_published(MergeResult(merged=True, branch="switchboard/task-1"))
    book.note_published(MergeResult(merged=True, branch="elsewhere"))
    book.record_cancel(at(2))
    last = book.page(0, 10).events[-1]
    assert "switchboard/task-1 was already published" in last.message
    assert last.data["published"] == "switchboard/task-1"


def test_integration_logs_the_diff_or_the_conflict() -> None:
    book = new_book()
    merged = MergeOutcome(
        result=MergeResult(merged=True, branch="t"), stat=DiffStat(files_changed=2)
    )
    book.record_integration(merged, at(1), publish=False)
    conflict = MergeOutcome(result=MergeResult(merged=False, branch="t", conflicts=["x"]))
    book.record_integration(conflict, at(2), publish=False)
    kinds = [e.kind for e in book.page(0, 10).events]
    assert kinds[-2:] == [EventKind.DIFF_READY, EventKind.MERGE_CONFLICT]
    assert book.status.merge == conflict.result


def test_the_diff_location_names_a_branch_or_the_combined_commit() -> None:
    book = new_book()
    prepared = PreparedRepo(
        repo="/r",
        mirror_path="/m",
        base_ref="main",
        base_commit="abc",
        is_local=True,
        host_queue="q",
    )
    assert book.diff_location(DiffRequest(), None, None).ref is None
    one = book.diff_location(DiffRequest(subagent=1), prepared, None)
    assert (one.mirror_path, one.ref) == ("/m", "switchboard/task-1/1")
    combined = book.diff_location(
        DiffRequest(), prepared, MergeResult(merged=True, branch="t", commit="def")
    )
    assert combined.ref == "def"


def test_failure_message_takes_the_innermost_application_error() -> None:
    inner = ApplicationError("the real reason")
    outer = RuntimeError("wrapped")
    outer.__cause__ = inner
    assert failure_message(outer) == "the real reason"


def test_failure_message_keeps_switchboard_advice_over_the_library_error() -> None:
    library = ApplicationError("Error code: 401 - Incorrect API key", type="AuthenticationError")
    ours = ApplicationError(
        "the model server refused the request (401); check SWITCHBOARD_LLM_API_KEY"
    )
    ours.__cause__ = library
    wrapper = RuntimeError("Activity task failed")
    wrapper.__cause__ = ours
    assert failure_message(wrapper).endswith("check SWITCHBOARD_LLM_API_KEY")
