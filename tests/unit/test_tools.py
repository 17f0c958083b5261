import json

import pytest

from switchboard.models import Role
from switchboard.tools import (
    CAPABILITIES,
    TOOL_ARGS,
    CheckedCall,
    DeniedCall,
    DenyReason,
    ToolName,
    check_call,
    openai_tool_schemas,
    safe_relative_path,
)


def test_roles_are_capabilities() -> None:
    assert ToolName.WRITE_FILE not in CAPABILITIES[Role.EXPLORER]
    assert ToolName.RUN not in CAPABILITIES[Role.REVIEWER]
    assert ToolName.DIFF in CAPABILITIES[Role.REVIEWER]
    assert ToolName.DIFF not in CAPABILITIES[Role.WORKER]
    assert {ToolName.WRITE_FILE, ToolName.APPLY_PATCH, ToolName.RUN} <= CAPABILITIES[Role.WORKER]
    for role in Role:
        assert ToolName.FINISH in CAPABILITIES[role]


@pytest.mark.parametrize(
    ("role", "tool"),
    [
        (Role.EXPLORER, "write_file"),
        (Role.EXPLORER, "run"),
        (Role.EXPLORER, "apply_patch"),
        (Role.REVIEWER, "write_file"),
        (Role.REVIEWER, "run"),
        (Role.WORKER, "diff"),
    ],
)
def test_calls_outside_the_role_are_denied(role: Role, tool: str) -> None:
    verdict = check_call(
        role, "c1", tool, json.dumps({"path": "a", "content": "x", "command": "ls", "patch": "p"})
    )
    assert isinstance(verdict, DeniedCall)
    assert verdict.reason is DenyReason.NOT_ALLOWED
    assert role.value in verdict.message


def test_unknown_tool_lists_the_available_ones() -> None:
    verdict = check_call(Role.EXPLORER, "c1", "curl", "{}")
    assert isinstance(verdict, DeniedCall) and verdict.reason is DenyReason.UNKNOWN_TOOL
    assert "read_file" in verdict.message and "write_file" not in verdict.message


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"path"'])
def test_malformed_arguments(raw: str) -> None:
    verdict = check_call(Role.WORKER, "c1", "read_file", raw)
    assert isinstance(verdict, DeniedCall) and verdict.reason is DenyReason.MALFORMED_ARGUMENTS


def test_invalid_arguments_name_the_field() -> None:
    verdict = check_call(Role.WORKER, "c1", "write_file", json.dumps({"path": "a.txt"}))
    assert isinstance(verdict, DeniedCall) and verdict.reason is DenyReason.INVALID_ARGUMENTS
    assert "content" in verdict.message
    extra = check_call(Role.WORKER, "c1", "read_file", json.dumps({"path": "a", "mode": "rw"}))
    assert isinstance(extra, DeniedCall) and extra.reason is DenyReason.INVALID_ARGUMENTS


@pytest.mark.parametrize(
    "path",
    ["../../etc/passwd", "/etc/passwd", "~/.ssh/id_rsa", "a/../../b", ".git/config", "x\x00y"],
)
def test_paths_outside_the_worktree_are_refused(path: str) -> None:
    verdict = check_call(Role.WORKER, "c1", "read_file", json.dumps({"path": path}))
    assert isinstance(verdict, DeniedCall) and verdict.reason is DenyReason.UNSAFE_PATH


def test_paths_are_normalised() -> None:
    verdict = check_call(Role.EXPLORER, "c1", "read_file", json.dumps({"path": "src/./a/../b.py"}))
    assert isinstance(verdict, CheckedCall)
    assert verdict.arguments == {"path": "src/b.py"}
    assert safe_relative_path(".") == "."


def test_schemas_offer_only_the_roles_tools() -> None:
    for role in Role:
        names = {s["function"]["name"] for s in openai_tool_schemas(role)}
        assert names == {t.value for t in CAPABILITIES[role]}
        for schema in openai_tool_schemas(role):
            assert schema["function"]["parameters"]["type"] == "object"
    assert set(TOOL_ARGS) == set(ToolName)


def test_schemas_are_each_callers_own_copy() -> None:
    first = openai_tool_schemas(Role.WORKER)
    first[0]["function"]["parameters"]["type"] = "changed"
    first.clear()
    again = openai_tool_schemas(Role.WORKER)
    assert again and all(s["function"]["parameters"]["type"] == "object" for s in again)
