"""The planner's side of a model call: its prompt, its one tool, and the strict reading
of what it answered (a plan the workflow can run, or `ModelOutputInvalid`)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, ValidationError
from temporalio.exceptions import ApplicationError

from switchboard.contracts import ChatMessage
from switchboard.models import Model, Role, SubtaskSpec
from switchboard.wire import Errors

SUBMIT_PLAN_TOOL = "submit_plan"

PLANNER_SYSTEM_PROMPT = """\
You plan coding tasks for a team of sandboxed subagents working on one git repository.
Split the user's goal into independent subtasks that can run in parallel, each done by
one subagent in its own copy of the repository. Roles:
- worker: reads, writes and patches files and runs commands (tests, linters).
- explorer: reads, lists and searches only; use it to survey code and report findings.
- reviewer: reads files and the diff; use it only for a separate review of existing work.
Prefer few, well-separated subtasks; two workers must not edit the same file.
Give each subtask a short title and complete instructions (the subagent sees only its
own subtask). Answer by calling the submit_plan tool once."""


class _PlanArguments(Model):
    subtasks: list[SubtaskSpec] = Field(min_length=1)


def submit_plan_schema(max_subtasks: int) -> dict[str, Any]:
    """The `submit_plan` tool, as the OpenAI `tools` parameter entry."""
    return {
        "type": "function",
        "function": {
            "name": SUBMIT_PLAN_TOOL,
            "description": "Submit the plan: the subtasks to run, each for one subagent.",
            "parameters": {
                "type": "object",
                "properties": {
                    "subtasks": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": max_subtasks,
                        "items": {
                            "type": "object",
                            "properties": {
                                "title": {"type": "string", "maxLength": 200},
                                "instructions": {"type": "string"},
                                "role": {"type": "string", "enum": [r.value for r in Role]},
                            },
                            "required": ["title", "instructions", "role"],
                            "additionalProperties": False,
                        },
                    }
                },
                "required": ["subtasks"],
                "additionalProperties": False,
            },
        },
    }


def parse_plan(reply: ChatMessage) -> list[SubtaskSpec]:
    calls = [call for call in reply.tool_calls if call.name == SUBMIT_PLAN_TOOL]
    if not calls:
        said = (reply.content or "").strip()[:200]
        why = f"no {SUBMIT_PLAN_TOOL} tool call" + (f" (it said: {said!r})" if said else "")
        raise _no_plan(why)
    try:
        decoded = json.loads(calls[0].arguments or "{}")
    except json.JSONDecodeError as exc:
        raise _no_plan(f"the {SUBMIT_PLAN_TOOL} arguments are not valid JSON ({exc.msg})") from exc
    try:
        return _PlanArguments.model_validate(decoded).subtasks
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
            for err in exc.errors()
        )
        raise _no_plan(problems) from exc


def _no_plan(why: str) -> ApplicationError:
    return ApplicationError(
        f"the planner model returned no usable plan: {why}", type=Errors.MODEL_OUTPUT_INVALID
    )
