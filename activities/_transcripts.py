"""Subagent transcripts on the worker host (claim check: never in workflow history).

One JSON file per transcript, replaced atomically (temp file + rename), so a
crash mid-write leaves the previous version, never a torn file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path, PurePosixPath

from pydantic import TypeAdapter

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
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(
        [m.model_dump(mode="json", exclude_defaults=True) for m in messages],
        ensure_ascii=False,
    )
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
