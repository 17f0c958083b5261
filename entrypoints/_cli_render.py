"""How the CLI shows tasks, events and diffs (rich tables on a terminal, plain text in pipes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from switchboard.models import (
    ApprovalRecord,
    DiffStat,
    DiffView,
    FollowNotice,
    Phase,
    SubagentState,
    SubagentStatus,
    TaskEvent,
    TaskStatus,
    TaskSummary,
)
from switchboard.text import visible

__all__ = [
    "approval_line",
    "diff_stat_text",
    "event_line",
    "render_diff",
    "status_view",
    "summaries_lines",
    "summaries_table",
    "tool_log_lines",
    "validation_message",
]

_PHASE_STYLE = {
    Phase.COMPLETED: "green",
    Phase.AWAITING_APPROVAL: "bold yellow",
    Phase.FAILED: "red",
    Phase.REJECTED: "magenta",
    Phase.CANCELLED: "dim",
}
_STATE_STYLE = {
    SubagentState.DONE: "green",
    SubagentState.RUNNING: "cyan",
    SubagentState.FAILED: "red",
    SubagentState.BUDGET_EXHAUSTED: "yellow",
    SubagentState.CANCELLED: "dim",
}


def diff_stat_text(stat: DiffStat | None) -> str:
    if stat is None:
        return "-"
    files = "file" if stat.files_changed == 1 else "files"
    return f"{stat.files_changed} {files} +{stat.insertions} -{stat.deletions}"


def summaries_table(tasks: Sequence[TaskSummary]) -> Table:
    table = Table(title=None if tasks else "no tasks yet", show_edge=False)
    for column in ("task", "phase", "status", "owner", "started"):
        table.add_column(column, no_wrap=True)
    table.add_column("repo", overflow="fold")
    for task in tasks:
        started = task.started_at.strftime("%Y-%m-%d %H:%M") if task.started_at else "-"
        style = _PHASE_STYLE.get(Phase(task.phase), "") if task.phase in set(Phase) else ""
        table.add_row(
            task.task_id,
            Text(task.phase or "-", style=style),
            visible(task.status),
            visible(task.owner),
            started,
            visible(task.repo),
        )
    return table


def summaries_lines(tasks: Sequence[TaskSummary]) -> list[str]:
    """Plain rows for pipes: one task per line, tab-separated, never cut."""
    return [
        "\t".join(
            (
                task.task_id,
                task.phase or "-",
                visible(task.status),
                visible(task.owner) or "-",
                task.started_at.strftime("%Y-%m-%dT%H:%M:%SZ") if task.started_at else "-",
                visible(task.repo) or "-",
            )
        )
        for task in tasks
    ]


def status_view(status: TaskStatus) -> Group:
    """A heading, the subagents table and the review/approval/merge lines."""
    phase = Text(status.phase.value, style=_PHASE_STYLE.get(status.phase, "bold cyan"))
    heading = Text.assemble(
        (status.task_id, "bold"),
        "  ",
        phase,
        f"  round {status.round}  owner {visible(status.owner)}",
    )
    lines: list[Any] = [
        heading,
        Text(f"goal: {_clip(status.goal, 300)}"),
        Text(f"repo: {visible(status.repo)}"),
        Text(f"updated: {status.updated_at:%Y-%m-%d %H:%M:%S} UTC"),
    ]
    if status.subagents:
        lines.append(_subagents_table(status))
    lines.extend(
        Text(f"#{s.index} {s.waiting}", style="yellow") for s in status.subagents if s.waiting
    )
    if status.diff_stat is not None:
        lines.append(Text(f"diff: {diff_stat_text(status.diff_stat)}"))
    if status.review is not None:
        comment = f": {_clip(status.review.comments, 200)}" if status.review.comments else ""
        lines.append(Text(f"review: {status.review.verdict}{comment}"))
    if status.target is not None and status.target.message:
        style = "red" if status.target.conflicts else "yellow" if status.target.behind else ""
        lines.append(Text(f"target: {visible(status.target.message)}", style=style))
    for record in status.approvals:
        lines.append(Text(approval_line(record)))
    if status.merge is not None:
        merge = status.merge
        if merge.merged:
            pushed = ", pushed" if merge.pushed else ""
            lines.append(Text(f"merge: {merge.branch} at {(merge.commit or '')[:12]}{pushed}"))
        else:
            conflicts = visible(", ".join(merge.conflicts) or merge.message)
            lines.append(Text(f"merge: conflicts in {conflicts}", style="red"))
    if status.phase is Phase.AWAITING_APPROVAL:
        lines.append(
            Text(
                f"next: switchboard task diff {status.task_id}, then approve, "
                "request-changes --feedback or reject",
                style="yellow",
            )
        )
    if status.error:
        lines.append(Text(f"error: {visible(status.error)}", style="red"))
    return Group(*lines)


def _subagents_table(status: TaskStatus) -> Table:
    """One row per subagent: its role, state, steps, tokens, tool calls and diff."""
    table = Table(show_edge=False)
    for column in ("#", "title", "role", "state", "steps", "tokens", "tools", "diff"):
        table.add_column(column, overflow="fold")
    for sub in status.subagents:
        tools = str(sub.tool_calls) + (f" ({sub.denied_calls} denied)" if sub.denied_calls else "")
        table.add_row(
            str(sub.index),
            _clip(sub.title, 60),
            sub.role.value,
            Text(sub.state.value, style=_STATE_STYLE.get(sub.state, "")),
            str(sub.steps),
            str(sub.tokens),
            tools,
            diff_stat_text(sub.diff_stat),
        )
    return table


def event_line(event: TaskEvent) -> str:
    """One event per line: offset, time, kind, subagent, message (markup-safe)."""
    who = f"#{event.subagent} " if event.subagent is not None else ""
    message = " ".join(visible(event.message).split())
    return f"{event.offset:>5}  {event.at:%H:%M:%S}  {event.kind.value:<17} {who}{escape(message)}"


def notice_line(notice: FollowNotice) -> str:
    """A follower's notice (no offset: it is not a task event), markup-safe."""
    return f"{'-':>5}  {notice.at:%H:%M:%S}  {notice.kind.value:<17} {escape(notice.message)}"


def tool_log_lines(subagents: list[SubagentStatus]) -> list[str]:
    """`task logs`: per subagent, its last tool calls and their output excerpts."""
    lines: list[str] = []
    for status in subagents:
        lines.append(f"#{status.index} {visible(status.title)} ({status.state.value})")
        if status.error:
            lines.append(f"  error: {visible(status.error)}")
        if not status.tools:
            lines.append("  no tool calls yet")
        for used in status.tools:
            mark = "ok" if used.ok else f"failed ({used.limit or 'error'})"
            code = f", exit {used.exit_code}" if used.exit_code is not None else ""
            lines.append(f"  step {used.step}: {used.tool} {mark}{code}")
            lines.extend(f"    | {line}" for line in visible(used.excerpt).splitlines())
    return lines


def approval_line(record: ApprovalRecord) -> str:
    comment = f": {_clip(record.comment, 200)}" if record.comment else ""
    return (
        f"{record.decision.replace('_', ' ')} by {record.by} "
        f"at {record.at:%Y-%m-%d %H:%M:%S} (round {record.round}){comment}"
    )


def render_diff(console: Console, view: DiffView, *, stat_only: bool) -> None:
    which = f"subagent {view.subagent}" if view.subagent is not None else "task"
    console.print(
        f"{view.task_id} ({which}) from {view.base_commit[:12]}: {diff_stat_text(view.stat)}",
        highlight=False,
    )
    for name in view.stat.files:
        console.print(f"  {escape(visible(name))}", highlight=False)
    if stat_only or not view.patch:
        return
    patch = visible(view.patch)  # --json has the raw bytes
    if console.is_terminal:
        console.print(Panel(Syntax(patch, "diff", word_wrap=True), expand=True))
    else:
        console.out(patch, end="" if patch.endswith("\n") else "\n", highlight=False)
    if view.truncated:
        console.print(
            "[yellow]patch truncated; read the rest with git in the repository mirror[/yellow]"
        )


def validation_message(errors: Sequence[Any]) -> str:
    """Pydantic errors as `field: problem; ...`."""
    parts = []
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg")))
    return "; ".join(parts)


def _clip(text: str, limit: int) -> str:
    line = " ".join(visible(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
