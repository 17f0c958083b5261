"""Subagent transcripts on the worker host (claim check: never in workflow history).

All files of a task live under `<transcripts_dir>/<task_id>/` (transcripts, step
journals, recorded planner replies), removed together when the task ends.

One JSON file per transcript, replaced atomically (temp file + rename), so a
crash mid-write leaves the previous version, never a torn file.

A task's cleanup first marks it ended (`<transcripts_dir>/.ended/<task_id>`), then
removes its folder. A write for an ended task is refused (`TaskEndedError`), and a
write that raced the cleanup (it checked before the mark, wrote after the removal)
sees the mark afterwards and removes what it wrote: a step that outlived its
workflow (a lost cancel, a worker cut off) never recreates the folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from pydantic import TypeAdapter, ValidationError

from switchboard.contracts import ChatMessage

_MESSAGES = TypeAdapter(list[ChatMessage])


ENDED_DIR = ".ended"
"""Under the transcripts root: one empty file per task whose files were removed."""


class TranscriptIdError(ValueError):
    """A transcript id that would leave the transcripts directory."""


class TaskEndedError(RuntimeError):
    """A write for a task that ended on this host (its files were removed)."""


def transcript_path(root: Path, transcript_id: str) -> Path:
    """`root/<transcript_id>.json`; ids may contain `/` but must stay under root.

    Raises:
        TranscriptIdError: the id is empty, absolute or climbs out with `..`.
    """
    parts = PurePosixPath(transcript_id).parts
    if not transcript_id or transcript_id.startswith("/") or any(p in ("..", ".") for p in parts):
        raise TranscriptIdError(
            f"transcript id {transcript_id!r} must be a relative path without '.' or '..'"
        )
    return root.joinpath(*parts).with_name(parts[-1] + ".json")


def load_transcript(path: Path) -> list[ChatMessage]:
    """The messages of a transcript file; empty when it does not exist yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return _MESSAGES.validate_json(data)


def save_transcript(root: Path, path: Path, messages: list[ChatMessage]) -> None:
    """Write a transcript of a task under `root` (see `write_task_file`)."""
    payload = json.dumps(
        [m.model_dump(mode="json", exclude_defaults=True) for m in messages],
        ensure_ascii=False,
    )
    write_task_file(root, path, payload.encode())


def write_task_file(root: Path, path: Path, data: bytes) -> None:
    """`write_atomically` for a file of a task under `root`, unless the task ended.

    Raises:
        TaskEndedError: the task's cleanup ran here, before or during this write (the
            task's folder is then removed again, with anything else a straggler wrote).
        TranscriptIdError: `path` is not below a task's folder of `root`.
    """
    parts = path.relative_to(root).parts if path.is_relative_to(root) else ()
    if len(parts) < 2 or parts[0].startswith("."):
        raise TranscriptIdError(f"{path} is not a file of a task under {root}")
    task_id = parts[0]
    if not task_ended(root, task_id):
        write_atomically(path, data)
    if task_ended(root, task_id):  # before or during this write: remove what a straggler left
        remove_task_files(root, task_id)
        raise TaskEndedError(f"task {task_id} ended on this host: {path.name} not kept")


def mark_task_ended(root: Path, task_id: str) -> None:
    """Record that the task ended here, before its files are removed (idempotent).

    Raises:
        TranscriptIdError: the task id is not one plain path component.
    """
    _check_task_id(task_id)
    marks = root / ENDED_DIR
    marks.mkdir(parents=True, exist_ok=True)
    (marks / task_id).touch()


def task_ended(root: Path, task_id: str) -> bool:
    """Whether the task's cleanup ran on this host (False for an id that names no task)."""
    if not task_id or "/" in task_id or task_id.startswith("."):
        return False
    return (root / ENDED_DIR / task_id).exists()


def collect_ended_marks(root: Path, older_than: float) -> int:
    """Remove the ended-marks written before `older_than` (a time.time()); how many."""
    removed = 0
    marks = root / ENDED_DIR
    for mark in sorted(marks.iterdir()) if marks.is_dir() else []:
        try:
            if mark.stat().st_mtime < older_than:
                mark.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


def _check_task_id(task_id: str) -> None:
    if not task_id or "/" in task_id or task_id.startswith("."):
        raise TranscriptIdError(f"task id {task_id!r} must be one plain path component")


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, durably: a crash leaves the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def remove_task_files(root: Path, task_id: str) -> bool:
    """Remove everything kept under `root` for one task; whether anything was there.

    Raises:
        TranscriptIdError: the task id is not one plain path component.
    """
    _check_task_id(task_id)
    folder = root / task_id
    if not folder.exists() and not folder.is_symlink():
        return False
    if folder.is_symlink() or not folder.is_dir():
        folder.unlink(missing_ok=True)
    else:
        # A late write of the ended task may be removing the same files (see
        # `task_ended`): what is already gone is fine, anything else is an error.
        shutil.rmtree(folder, onerror=_gone_is_fine)
    return True


def _gone_is_fine(
    function: object, path: str, exc_info: tuple[type, BaseException, object]
) -> None:
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]


def reap_task_files(root: Path, live_task_ids: set[str]) -> list[str]:
    """Remove the files of every task under `root` that is not in `live_task_ids`."""
    if not root.is_dir():
        return []
    reaped = []
    for folder in sorted(root.iterdir()):
        if folder.name not in live_task_ids and not folder.name.startswith("."):
            remove_task_files(root, folder.name)
            reaped.append(folder.name)
    return reaped


def load_or_empty(path: Path) -> list[ChatMessage]:
    """A recorded exchange, or nothing when it is missing or unreadable (then ask again)."""
    try:
        return load_transcript(path)
    except ValidationError:
        return []


def recorded_reply(history: list[ChatMessage], messages: list[ChatMessage]) -> ChatMessage | None:
    """The model's reply to exactly `messages`, if the transcript already holds it."""
    if len(history) != len(messages) + 1 or history[-1].role != "assistant":
        return None
    return history[-1] if history[:-1] == messages else None
