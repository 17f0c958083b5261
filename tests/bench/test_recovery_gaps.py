"""B2's reading of the model server's request and answer times against its kill times."""

from __future__ import annotations

from bench.recovery import repaid_gaps


def test_a_call_paid_again_is_placed_against_the_kill_that_lost_it() -> None:
    calls = {
        "answered-before-kill": {"requested": [9.9, 12.0], "answered": [10.0, 12.5]},
        "open-at-kill": {"requested": [20.8, 23.0], "answered": [21.5, 23.5]},
        "no-kill-between": {"requested": [40.0, 40.5], "answered": [40.2, 41.0]},
    }
    gaps = repaid_gaps(calls, kills=[10.25, 11.0, 21.0, 30.0])
    # Answered 0.25 s before the kill; answered 0.5 s after the kill it was open at;
    # paid again with no kill after its request: the case a bug would show as.
    assert gaps == [0.25, -0.5, None]


def test_each_answer_after_the_first_counts_once() -> None:
    calls = {"thrice": {"requested": [0.5, 2.0, 4.5], "answered": [3.0, 1.0, 5.0]}}
    assert repaid_gaps(calls, kills=[1.5, 4.0]) == [0.5, 1.0]
