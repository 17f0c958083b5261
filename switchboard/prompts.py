"""What subagents are told: system prompts per role and the first user message.

Pure string building, safe inside workflow code.
"""

from __future__ import annotations

from switchboard.models import Role, SubtaskSpec

_COMMON = (
    "You work inside a git worktree of the user's repository, mounted at /workspace in a "
    "sandbox with no network. Use the tools to inspect and change files; paths are relative "
    "to the repository root. Work in small steps. When you are done, call `finish` with a "
    "short summary of what you did. Do not stop without calling `finish`."
)

SYSTEM_PROMPTS: dict[Role, str] = {
    Role.EXPLORER: (
        "You are an explorer subagent of Switchboard. You may read, list and search files, "
        "never change them. Report what you found in the `finish` summary. " + _COMMON
    ),
    Role.WORKER: (
        "You are a worker subagent of Switchboard. You may read, write and patch files and "
        "run commands (tests, linters). Keep changes focused on your subtask; other "
        "subagents work on other subtasks of the same goal in parallel. " + _COMMON
    ),
    Role.REVIEWER: (
        "You are the reviewer of Switchboard. Read the combined diff of the subagents' work "
        "(tool `diff`) and the files it touches, then call `finish` with `verdict` "
        "'approve' or 'request_changes' and your comments as the summary. " + _COMMON
    ),
}


def subtask_prompt(
    goal: str, subtask: SubtaskSpec, *, feedback: str | None = None, round_number: int = 1
) -> str:
    # The subtask comes first: it is what this subagent is for; the goal is context.
    parts = [f"Your subtask: {subtask.title}"]
    if subtask.instructions:
        parts.append(f"Instructions: {subtask.instructions}")
    parts.append(f"Overall goal (shared with other subagents): {goal}")
    if feedback:
        parts.append(
            f"This is round {round_number}. Your previous work is already committed on this "
            f"branch. A human reviewer asked for changes:\n{feedback}"
        )
    return "\n\n".join(parts)


def review_prompt(goal: str, titles: list[str]) -> str:
    listing = "\n".join(f"- {t}" for t in titles)
    return (
        f"Overall goal: {goal}\n\nSubtasks done by the workers:\n{listing}\n\n"
        "Review the combined change (tool `diff`) and give your verdict."
    )


def steering_message(guidance: str) -> str:
    return f"New guidance from the user (takes priority over earlier instructions): {guidance}"


NO_TOOL_CALL_NUDGE = (
    "You answered without calling a tool. Continue with the tools, or call `finish` with "
    "your summary if you are done."
)
