"""Choosing and rendering the next assistant turn: pure functions of the request.

The turn index is derived from the request alone (how many assistant messages it
already holds), so a retried request gets the very same answer: the server keeps
no conversation state, exactly like a real model endpoint.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from switchboard.model_server._scenario import RoleScript, Scenario, Script, ScriptedRole, Turn

TEMPLATE_CHARS = 200
LAST_TOOL_CHARS = 500
"""Tool results are JSON the gateway wrote: a little more room so a reply can quote one."""
MATCH_CHARS = 2_000
"""A named group of `when` (`{match.goal}`) may carry a whole request, e.g. a task's goal."""
_PLACEHOLDER = re.compile(r"\{(subagent|task|goal|last_user|last_tool|match\.[A-Za-z_]\w*)\}")


@dataclass(frozen=True)
class RequestContext:
    """What a turn may depend on: the role headers and the user messages."""

    role: ScriptedRole
    subagent: int
    task: str
    first_user: str
    last_user: str
    assistant_messages: int
    assistant_since_last_user: int
    last_tool: str = ""

    def values(self, groups: Mapping[str, str | None] | None = None) -> dict[str, str]:
        values = {
            "subagent": str(self.subagent),
            "task": self.task,
            "goal": self.first_user[:TEMPLATE_CHARS],
            "last_user": self.last_user[:TEMPLATE_CHARS],
            "last_tool": self.last_tool[:LAST_TOOL_CHARS],
        }
        for name, value in (groups or {}).items():
            values[f"match.{name}"] = (value or "").strip()[:MATCH_CHARS]
        return values


@dataclass(frozen=True)
class ToolCallReply:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Reply:
    content: str | None
    tool_calls: list[ToolCallReply]


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def request_context(
    role: ScriptedRole, messages: Sequence[Mapping[str, Any]], *, subagent: int, task: str
) -> RequestContext:
    users = [message_text(m) for m in messages if m.get("role") == "user"]
    tools = [message_text(m) for m in messages if m.get("role") == "tool"]
    assistants = 0
    since_last_user = 0
    for message in messages:
        if message.get("role") == "user":
            since_last_user = 0
        elif message.get("role") == "assistant":
            assistants += 1
            since_last_user += 1
    return RequestContext(
        role=role,
        subagent=subagent,
        task=task,
        first_user=users[0] if users else "",
        last_user=users[-1] if users else "",
        assistant_messages=assistants,
        assistant_since_last_user=since_last_user,
        last_tool=tools[-1] if tools else "",
    )


def next_reply(scenario: Scenario, context: RequestContext) -> Reply:
    """The rendered turn the scenario plays for this request."""
    role_script = scenario.roles.get(context.role, RoleScript())
    script, groups = _select_script(role_script, context)
    index = (
        context.assistant_since_last_user
        if script.index_from == "last_user"
        else context.assistant_messages
    )
    if index < len(script.turns):
        turn = script.turns[index]
    else:
        turn = script.default or role_script.default or fallback_turn(context.role)
    return _render(turn, context, groups)


def fallback_turn(role: ScriptedRole) -> Turn:
    """What a role plays when the scenario says nothing more: something that ends it."""
    if role is ScriptedRole.PLANNER:
        plan = {"subtasks": [{"title": "Do the task", "instructions": "{goal}", "role": "worker"}]}
        return Turn.model_validate({"tool_calls": [{"name": "submit_plan", "arguments": plan}]})
    if role is ScriptedRole.CONVERSATION:
        return Turn(content="(scripted model) I have nothing more to add.")
    finish: dict[str, Any] = {"summary": "Scripted run ended: no more turns in the scenario."}
    if role is ScriptedRole.REVIEWER:
        finish["verdict"] = "approve"
    return Turn.model_validate({"tool_calls": [{"name": "finish", "arguments": finish}]})


def _select_script(
    role_script: RoleScript, context: RequestContext
) -> tuple[Script, dict[str, str | None]]:
    """The first script whose `when` matches, with the named groups of that match."""
    for script in role_script.scripts:
        if script.when is None:
            return script, {}
        text = context.first_user if script.match == "first_user" else context.last_user
        found = re.search(script.when, text)
        if found:
            return script, found.groupdict()
    return Script(turns=role_script.turns, default=role_script.default), {}


def _render(turn: Turn, context: RequestContext, groups: Mapping[str, str | None]) -> Reply:
    values = context.values(groups)
    calls = []
    for position, call in enumerate(turn.tool_calls):
        if isinstance(call.arguments, str):
            arguments = _fill(call.arguments, values)
        else:
            arguments = json.dumps(_fill_tree(call.arguments, values), ensure_ascii=False)
        calls.append(
            ToolCallReply(id=_call_id(context, position), name=call.name, arguments=arguments)
        )
    content = None if turn.content is None else _fill(turn.content, values)
    return Reply(content=content, tool_calls=calls)


def _fill(text: str, values: Mapping[str, str]) -> str:
    # Only the known placeholders: code and JSON in scenarios keep their braces. A
    # `{match.name}` whose group did not take part in the match becomes empty.
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), text)


def _fill_tree(node: Any, values: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return _fill(node, values)
    if isinstance(node, list):
        return [_fill_tree(item, values) for item in node]
    if isinstance(node, dict):
        return {key: _fill_tree(item, values) for key, item in node.items()}
    return node


def _call_id(context: RequestContext, position: int) -> str:
    # Deterministic, so a retried request returns the same tool call ids too.
    parts = (context.role.value, context.task, str(context.subagent), context.first_user)
    seed = "|".join((*parts, str(context.assistant_messages), str(position)))
    return "call_" + hashlib.sha256(seed.encode()).hexdigest()[:24]
