"""The step journal: each tool call's start and outcome, on disk before and after it runs.

A retried step (its worker died) reads the journal of its first attempts: a call
with an outcome is not run again (its outcome is reused), and a call that started
but has no outcome was interrupted. One small JSON file per step beside the
subagent's transcript, replaced atomically and fsynced, so it survives a SIGKILL
at any point.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from activities._transcripts import transcript_path, write_task_file
from switchboard.contracts import ToolOutcome
from switchboard.models import Model


class JournalEntry(Model):
    position: int
    call_id: str
    checkpoint: str | None = None
    """The worktree's tree before the call, for calls that may write."""
    outcome: ToolOutcome | None = None
    """None while the call runs: an entry without one after a crash was interrupted."""


class StepJournal(Model):
    entries: list[JournalEntry] = Field(default_factory=list)

    def entry(self, position: int, call_id: str) -> JournalEntry | None:
        for entry in self.entries:
            if entry.position == position and entry.call_id == call_id:
                return entry
        return None


def journal_path(root: Path, step_id: str) -> Path:
    """`root/<step_id>.tools.json` (the step id is the turn's `call_id`).

    Raises:
        TranscriptIdError: the id would leave `root`.
    """
    path = transcript_path(root, step_id)
    return path.with_name(path.name.removesuffix(".json") + ".tools.json")


def checkpoint_index_path(root: Path, transcript_id: str) -> Path:
    """The private git index a subagent's checkpoints use (one per transcript), alone
    in its own directory: the confined checkpoint git may write that directory only.

    Raises:
        TranscriptIdError: the id would leave `root`.
    """
    path = transcript_path(root, transcript_id)
    return path.with_name(path.name.removesuffix(".json") + ".checkpoint") / "index"


def load_journal(path: Path) -> StepJournal:
    """The journal at `path`; empty when there is none yet.

    Raises:
        ValidationError: the file is not a journal (writes are atomic, so it was
            not written by us; guessing could run a command twice).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return StepJournal()
    return StepJournal.model_validate_json(data)


def save_journal(root: Path, path: Path, journal: StepJournal) -> None:
    """Write a step's journal under the transcripts `root`.

    Raises:
        TaskEndedError: the step's task ended on this host (see `write_task_file`).
    """
    write_task_file(root, path, journal.model_dump_json(exclude_defaults=True).encode())
