"""The turns of one session waiting for an answer, and who answers them: pure, no Temporal.

Turns are answered in order, one at a time: the oldest open turn (the head) is the one
a runner (a gateway) answers, recording it in steps and finishing it with its last
step. A runner claims the head; a claim a runner stopped renewing is free for another
after `TURN_LEASE`. A record names its turn and, optionally, its `step` (how many
records of that turn its runner sent before): a record with a step may arrive before
the ones it follows, and waits for them (`ConversationWorkflow.record_turn`); a record
without one must find its turn at the head when it arrives.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from switchboard.conversation import RecordTurn, TurnState

TURN_LEASE = timedelta(minutes=2)
"""A turn claimed by a runner that stopped writing is free for another after this."""


class Turns:
    """The open turns, oldest first."""

    def __init__(self, turns: list[TurnState]) -> None:
        self.open = turns

    @property
    def head(self) -> TurnState | None:
        return self.open[0] if self.open else None

    def find(self, turn: int) -> TurnState | None:
        return next((t for t in self.open if t.turn == turn), None)

    def add(self, turn: TurnState) -> None:
        self.open.append(turn)

    def claim(self, runner: str, now: datetime) -> int | None:
        """The head for `runner` if it is free, its own, or left by a stale claim."""
        head = self.head
        if head is None:
            return None
        stale = head.claimed_at is not None and now - head.claimed_at > TURN_LEASE
        if head.runner is None or head.runner == runner or stale:
            head.runner = runner
            head.claimed_at = now
            return head.turn
        return None

    def refusal(self, record: RecordTurn) -> str:
        """Why `record` can never be applied ("" when it can be, now or after the
        records before it)."""
        answering = f"turn {record.turn} is not being answered by {record.runner}"
        if record.step is None:
            return "" if self.ready(record) else answering
        if self.find(record.turn) is None:
            return f"turn {record.turn} is not waiting for an answer"
        head = self.head
        if head is not None and head.turn == record.turn and head.runner != record.runner:
            return answering
        if self.passed(record):
            return f"step {record.step} of turn {record.turn} is recorded already"
        return ""

    def ready(self, record: RecordTurn) -> bool:
        """The record's turn is the head, answered by its runner, at its step (a record
        without a step is ready whenever its turn is the runner's head)."""
        head = self.head
        if head is None or (head.turn, head.runner) != (record.turn, record.runner):
            return False
        return record.step is None or head.steps == record.step

    def passed(self, record: RecordTurn) -> bool:
        """The record can no longer apply: its turn was answered, went to another
        runner, or went past its step."""
        head = self.head
        if head is None or self.find(record.turn) is None:
            return True
        if head.turn != record.turn:
            return False
        return head.runner != record.runner or head.steps > (record.step or 0)

    def step(self, now: datetime) -> None:
        """Book one record of the head (its claim renewed)."""
        head = self.open[0]
        head.claimed_at = now
        head.steps += 1

    def finish(self, runner: str, now: datetime) -> int | None:
        """The head answered: the next turn, claimed for `runner` if it is free."""
        self.open.pop(0)
        return self.claim(runner, now)
