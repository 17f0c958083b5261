"""B2's reading of the model server's answer times against its kill times."""

from __future__ import annotations

from bench.recovery import repaid_gaps


def test_a_call_paid_again_is_placed_against_the_kill_between_its_answers() -> None:
    answered = {"lost-at-kill": [10.0, 12.5], "no-kill-between": [20.0, 21.0]}
    gaps = repaid_gaps(answered, kills=[10.25, 11.0, 30.0])
    # The first kill after the first answer counts; a pair with no kill between is None.
    assert gaps == [0.25, None]


def test_each_answer_after_the_first_counts_once() -> None:
    gaps = repaid_gaps({"thrice": [3.0, 1.0, 5.0]}, kills=[1.5, 4.0])
    assert gaps == [0.5, 1.0]
