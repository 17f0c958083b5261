"""The subagent tool set and role capabilities: pure code, safe inside workflows.

A model's tool call is parsed and checked here before anything runs:
`check_call` returns either a validated call or the reason it is refused (unknown
tool, malformed JSON, bad arguments, not allowed for the role, unsafe path). The
sandbox mounts enforce the role a second time.
"""

from __future__ import annotations

import copy
import functools
import json
import posixpath
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from switchboard.models import Role

MAX_FILE_BYTES = 512 * 1024
MAX_COMMAND_CHARS = 8_000


class ToolName(StrEnum):
    LIST_FILES = "list_files"
    READ_FILE = "read_file"
    SEARCH = "search"
    WRITE_FILE = "write_file"
    APPLY_PATCH = "apply_patch"
    RUN = "run"
    DIFF = "diff"
    FINISH = "finish"


CAPABILITIES: dict[Role, frozenset[ToolName]] = {
    Role.EXPLORER: frozenset(
        {ToolName.LIST_FILES, ToolName.READ_FILE, ToolName.SEARCH, ToolName.FINISH}
    ),
    Role.WORKER: frozenset(
        {
            ToolName.LIST_FILES,
            ToolName.READ_FILE,
            ToolName.SEARCH,
            ToolName.WRITE_FILE,
            ToolName.APPLY_PATCH,
            ToolName.RUN,
            ToolName.FINISH,
        }
    ),
    Role.REVIEWER: frozenset(
        {
            ToolName.LIST_FILES,
            ToolName.READ_FILE,
            ToolName.SEARCH,
            ToolName.DIFF,
            ToolName.FINISH,
        }
    ),
}


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListFilesArgs(_Args):
    path: str = Field(default=".", max_length=1000)


class ReadFileArgs(_Args):
    path: str = Field(max_length=1000)


class SearchArgs(_Args):
    pattern: str = Field(min_length=1, max_length=1000)
    path: str = Field(default=".", max_length=1000)


class WriteFileArgs(_Args):
    path: str = Field(max_length=1000)
    content: str = Field(max_length=MAX_FILE_BYTES)


class ApplyPatchArgs(_Args):
    patch: str = Field(min_length=1, max_length=MAX_FILE_BYTES)


class RunArgs(_Args):
    command: str = Field(min_length=1, max_length=MAX_COMMAND_CHARS)
    timeout_seconds: int = Field(default=60, ge=1, le=600)


class DiffArgs(_Args):
    path: str | None = Field(default=None, max_length=1000)


class FinishArgs(_Args):
    summary: str = Field(default="", max_length=20_000)
    verdict: str | None = Field(
        default=None,
        description="Reviewers only: 'approve' or 'request_changes'.",
        pattern="^(approve|request_changes)$",
    )


TOOL_ARGS: dict[ToolName, type[_Args]] = {
    ToolName.LIST_FILES: ListFilesArgs,
    ToolName.READ_FILE: ReadFileArgs,
    ToolName.SEARCH: SearchArgs,
    ToolName.WRITE_FILE: WriteFileArgs,
    ToolName.APPLY_PATCH: ApplyPatchArgs,
    ToolName.RUN: RunArgs,
    ToolName.DIFF: DiffArgs,
    ToolName.FINISH: FinishArgs,
}

TOOL_DESCRIPTIONS: dict[ToolName, str] = {
    ToolName.LIST_FILES: "List files under a directory of the repository (relative path).",
    ToolName.READ_FILE: "Read a text file of the repository (relative path).",
    ToolName.SEARCH: "Search the repository for a regular expression (like grep -rn).",
    ToolName.WRITE_FILE: "Create or overwrite a file of the repository with the given content.",
    ToolName.APPLY_PATCH: "Apply a unified diff (as produced by `diff -u` / `git diff`) at the "
    "repository root.",
    ToolName.RUN: "Run a shell command at the repository root in the sandbox (no network).",
    ToolName.DIFF: "Show the diff of the work under review against the base commit.",
    ToolName.FINISH: "End your work with a summary (reviewers: also a verdict).",
}


class CheckedCall(BaseModel):
    """A tool call that passed every check and may be executed."""

    model_config = ConfigDict(extra="forbid")

    call_id: str
    name: ToolName
    arguments: dict[str, Any]


class DenyReason(StrEnum):
    UNKNOWN_TOOL = "unknown_tool"
    MALFORMED_ARGUMENTS = "malformed_arguments"
    INVALID_ARGUMENTS = "invalid_arguments"
    NOT_ALLOWED = "not_allowed"
    UNSAFE_PATH = "unsafe_path"


class DeniedCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    call_id: str
    name: str
    reason: DenyReason
    message: str


def tools_for(role: Role) -> list[ToolName]:
    return sorted(CAPABILITIES[role])


def openai_tool_schemas(role: Role) -> list[dict[str, Any]]:
    """The OpenAI `tools` parameter for a role: only what the role may call.

    Built once per role (pydantic's JSON schema generation took ~30 ms of worker CPU
    on every model turn, bench B4); each caller gets its own copy to change at will.
    """
    return copy.deepcopy(_tool_schemas(role))


@functools.cache
def _tool_schemas(role: Role) -> list[dict[str, Any]]:
    schemas = []
    for name in tools_for(role):
        params = TOOL_ARGS[name].model_json_schema()
        params.pop("title", None)
        schemas.append(
            {
                "type": "function",
                "function": {
                    "name": name.value,
                    "description": TOOL_DESCRIPTIONS[name],
                    "parameters": params,
                },
            }
        )
    return schemas


def safe_relative_path(path: str) -> str | None:
    """Normalise a repository path; None if it is absolute or leaves the worktree.

    The sandbox would refuse such a path too; refusing it here tells the model
    why instead of letting it run into an opaque EROFS / ENOENT.
    """
    if not path or "\x00" in path or path.startswith(("/", "~")):
        return None
    normal = posixpath.normpath(path)
    if normal == ".." or normal.startswith("../") or normal.startswith("/"):
        return None
    if normal == ".git" or normal.startswith(".git/"):
        return None
    return normal


def _json_object(raw_arguments: str) -> dict[str, Any] | str:
    """The arguments as a JSON object, or why they are not one."""
    try:
        decoded = json.loads(raw_arguments or "{}")
    except json.JSONDecodeError as exc:
        return f"arguments are not valid JSON ({exc.msg} at position {exc.pos})"
    if not isinstance(decoded, dict):
        return "arguments must be a JSON object"
    return decoded


def check_call(role: Role, call_id: str, name: str, raw_arguments: str) -> CheckedCall | DeniedCall:
    """Parse and authorise one tool call of a model, without running it."""
    try:
        tool = ToolName(name)
    except ValueError:
        known = ", ".join(t.value for t in tools_for(role))
        return DeniedCall(
            call_id=call_id,
            name=name,
            reason=DenyReason.UNKNOWN_TOOL,
            message=f"unknown tool {name!r}; available tools: {known}",
        )
    if tool not in CAPABILITIES[role]:
        return DeniedCall(
            call_id=call_id,
            name=name,
            reason=DenyReason.NOT_ALLOWED,
            message=f"the {role.value} role may not call {name!r}",
        )
    decoded = _json_object(raw_arguments)
    if isinstance(decoded, str):
        return DeniedCall(
            call_id=call_id, name=name, reason=DenyReason.MALFORMED_ARGUMENTS, message=decoded
        )
    try:
        args = TOOL_ARGS[tool].model_validate(decoded)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
            for err in exc.errors()
        )
        return DeniedCall(
            call_id=call_id,
            name=name,
            reason=DenyReason.INVALID_ARGUMENTS,
            message=f"invalid arguments for {name}: {problems}",
        )
    values = args.model_dump()
    path = values.get("path")
    if isinstance(path, str):
        safe = safe_relative_path(path)
        if safe is None:
            return DeniedCall(
                call_id=call_id,
                name=name,
                reason=DenyReason.UNSAFE_PATH,
                message=f"path {path!r} is outside the repository; use a relative path inside it",
            )
        values["path"] = safe
    return CheckedCall(call_id=call_id, name=tool, arguments=values)
