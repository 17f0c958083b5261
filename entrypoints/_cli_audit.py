"""`switchboard task audit`: who submitted, steered, decided and cancelled a task.

Through the API as the signed-in user (`GET /v1/tasks/{id}/audit`, scoped like every
read), or with `switchboard task --direct` straight from the workflow."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from entrypoints._cli_run import run_tasks

if TYPE_CHECKING:
    from switchboard.audit import AuditTrail

__all__ = ["audit", "trail_lines"]


def trail_lines(trail: AuditTrail) -> list[str]:
    lines = [
        f"{entry.at:%Y-%m-%d %H:%M:%S} {entry.action.value:<17} "
        f"{entry.owner or '(no identity)'} [{entry.via}]"
        + (f": {entry.detail[:200]}" if entry.detail else "")
        for entry in trail.entries
    ]
    if not trail.complete:
        lines.append("(older entries left the task's event log; its Temporal history has them)")
    return lines or [f"{trail.task_id}: nothing recorded yet"]


def audit(
    task_id: Annotated[str, typer.Argument(help="The task id (task-...).")],
    user: Annotated[
        str,
        typer.Option("--user", envvar="SWITCHBOARD_USER", help="Who you are (local mode)."),
    ] = "local",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Who submitted, steered, decided and cancelled the task, and when (verified)."""
    trail = run_tasks(lambda tasks: tasks.audit(task_id), user)
    if as_json:
        typer.echo(trail.model_dump_json(indent=2))
        return
    for line in trail_lines(trail):
        typer.echo(line)
