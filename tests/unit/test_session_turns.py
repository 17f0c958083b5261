"""The conversation's open turns (`workflows/_turns.py`): claims, leases and the order
records are applied in; pure, no Temporal."""

from __future__ import annotations

from datetime import UTC, datetime

from switchboard.conversation import RecordTurn, TurnState
from workflows._turns import TURN_LEASE, Turns

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _record(turn: int, step: int | None, runner: str = "a") -> RecordTurn:
    return RecordTurn(turn=turn, runner=runner, step=step)


def test_a_claim_is_held_until_its_lease_runs_out() -> None:
    turns = Turns([TurnState(turn=1, user_offset=0), TurnState(turn=2, user_offset=1)])
    assert turns.claim("a", T0) == 1
    assert turns.claim("b", T0 + TURN_LEASE) is None  # not stale yet
    assert turns.claim("b", T0 + TURN_LEASE * 2) == 1  # a stopped writing: b takes over
    turns.step(T0 + TURN_LEASE * 2)
    assert turns.finish("b", T0 + TURN_LEASE * 2) == 2
    assert turns.finish("b", T0 + TURN_LEASE * 2) is None and turns.head is None


def test_records_apply_in_step_order_and_can_tell_when_they_never_will() -> None:
    turns = Turns([TurnState(turn=1, user_offset=0), TurnState(turn=2, user_offset=1)])
    turns.claim("a", T0)
    early = _record(2, 0)
    assert turns.refusal(early) == "" and not turns.ready(early) and not turns.passed(early)
    assert turns.ready(_record(1, 0)) and not turns.ready(_record(1, 1))
    turns.step(T0)
    assert turns.passed(_record(1, 0))
    assert "recorded already" in turns.refusal(_record(1, 0))
    assert turns.ready(_record(1, 1)) and turns.ready(_record(1, None))
    assert "not being answered by b" in turns.refusal(_record(1, 1, runner="b"))
    assert "not being answered" in turns.refusal(_record(2, None))  # no step: must be head
    assert "not waiting" in turns.refusal(_record(3, 0))
    turns.step(T0)
    turns.finish("a", T0)
    assert turns.ready(early)
