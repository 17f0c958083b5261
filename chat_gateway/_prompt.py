"""What the conversation model sees: a system prompt, the session's tasks, and its
recent entries as chat messages, with task events in between as system notes.

Pure functions of a `TurnContext`, so a resumed turn sends the same prompt.
"""

from __future__ import annotations

from typing import Any

from switchboard.contracts import ChatToolCall
from switchboard.conversation import EntryKind, SessionEntry, TurnContext
from switchboard.llm_client import openai_message

__all__ = ["SYSTEM_PROMPT", "build_messages", "last_step", "unanswered_calls"]

SYSTEM_PROMPT = """\
You are Switchboard, the user's coding assistant. You never do coding work yourself:
you delegate it with `delegate_task`, which starts a durable task of sandboxed subagents
and returns at once. Tasks run for minutes or days; you keep talking with the user
meanwhile and never wait for a task. Their progress reaches you as system notes
("[task-… · phase] kind: message"): tell the user what matters (a plan, a failure, an
approval request, a merge) in a sentence or two. Use `task_status`, `list_tasks` and
`show_diff` to answer questions, `steer_task` to pass on new guidance, and approve,
request changes, reject or cancel only when the user asks you to. Be brief."""

TASKS_IN_PROMPT = 30


def build_messages(context: TurnContext) -> list[dict[str, Any]]:
    """The OpenAI `messages` for one step of a turn."""
    facts = [SYSTEM_PROMPT, f"\nThe user is {context.owner}."]
    if context.repo:
        facts.append(f"The session's repository (the default for new tasks): {context.repo}")
    if context.tasks:
        facts.append("Tasks of this session (newest last):")
        for task in context.tasks[-TASKS_IN_PROMPT:]:
            facts.append(f"- {task.task_id} · {task.phase.value} · {task.goal[:160]}")
    if context.summary:
        facts.append(context.summary)
    messages: list[dict[str, Any]] = [{"role": "system", "content": "\n".join(facts)}]
    for entry in _ordered(context.entries, context.turn):
        message = _message(entry)
        if message is not None:
            messages.append(message)
    return _well_formed(messages)


def unanswered_calls(context: TurnContext) -> tuple[int, list[ChatToolCall]]:
    """The step and tool calls of this turn recorded without results (a crash between
    recording a step and its results); they run before the model is asked again."""
    step = 0
    calls: list[ChatToolCall] = []
    answered: set[str] = set()
    for entry in context.entries:
        if entry.turn != context.turn:
            continue
        if entry.role == "assistant":
            step = entry.step or step
            calls = list(entry.tool_calls)
            answered = set()
        elif entry.role == "tool" and entry.tool_call_id:
            answered.add(entry.tool_call_id)
    return step, [c for c in calls if c.id not in answered]


def last_step(context: TurnContext) -> int:
    steps = [
        e.step or 0 for e in context.entries if e.turn == context.turn and e.role == "assistant"
    ]
    return max(steps, default=0)


def _ordered(entries: list[SessionEntry], current: int) -> list[SessionEntry]:
    # A question posted while an earlier turn was answered belongs just before its own
    # answer, not before the earlier answer; the current question goes last.
    first_reply: dict[int, int] = {}
    for entry in entries:
        if entry.turn is not None and entry.role != "user":
            first_reply.setdefault(entry.turn, entry.offset)

    def key(entry: SessionEntry) -> float:
        if entry.role == "user" and entry.turn is not None:
            if entry.turn == current and current not in first_reply:
                return float("inf")
            if entry.turn in first_reply:
                return first_reply[entry.turn] - 0.5
        return float(entry.offset)

    return sorted(entries, key=key)


def _message(entry: SessionEntry) -> dict[str, Any] | None:
    if entry.kind is EntryKind.TASK_EVENT:
        phase = f" · {entry.phase.value}" if entry.phase else ""
        kind = entry.event.value if entry.event else "event"
        return {"role": "system", "content": f"[{entry.task_id}{phase}] {kind}: {entry.content}"}
    if entry.kind is EntryKind.NOTICE:
        return {"role": "system", "content": f"(notice) {entry.content}"}
    if entry.kind is not EntryKind.MESSAGE or entry.role is None:
        return None
    if entry.role == "assistant" and not entry.tool_calls and not entry.content:
        return None
    content = entry.content or None if entry.role == "assistant" else entry.content
    return openai_message(
        entry.role, content, tool_calls=entry.tool_calls, tool_call_id=entry.tool_call_id
    )


def _well_formed(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool results right after their call, nothing between them, no orphans.

    OpenAI refuses a result without its call, a call without its results, and
    anything in between. Task notes recorded while tools ran, the window's edge
    and an interrupted step can each break that, so results are moved next to
    their call and incomplete calls are dropped (their text is kept).
    """
    results = {m["tool_call_id"]: m for m in messages if m["role"] == "tool"}
    kept: list[dict[str, Any]] = []
    for message in messages:
        if message["role"] == "tool":
            continue
        if message["role"] == "assistant" and message.get("tool_calls"):
            ids = [call["id"] for call in message["tool_calls"]]
            if not all(i in results for i in ids):
                if message.get("content"):
                    kept.append({"role": "assistant", "content": message["content"]})
                continue
            kept.append(message)
            kept.extend(results[i] for i in ids)
            continue
        kept.append(message)
    return kept
