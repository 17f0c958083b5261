"""Subagent transcripts on the worker host (claim check: never in workflow history).

All files of a task live under `<transcripts_dir>/<task_id>/` (transcripts, step
journals, recorded planner replies), removed together when the task ends.

One JSON file per transcript, replaced atomically (temp file + rename), so a
crash mid-write leaves the previous version, never a torn file.
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


class TranscriptIdError(ValueError):
    """A transcript id that would leave the transcripts directory."""


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


def save_transcript(path: Path, messages: list[ChatMessage]) -> None:
    payload = json.dumps(
        [m.model_dump(mode="json", exclude_defaults=True) for m in messages],
        ensure_ascii=False,
    )
    write_atomically(path, payload.encode())


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
    if not task_id or "/" in task_id or task_id in (".", ".."):
        raise TranscriptIdError(f"task id {task_id!r} must be one plain path component")
    folder = root / task_id
    if not folder.exists() and not folder.is_symlink():
        return False
    if folder.is_symlink() or not folder.is_dir():
        folder.unlink()
    else:
        shutil.rmtree(folder)
    return True


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
