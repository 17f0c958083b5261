"""The `switchboard` command: run the stack, and delegate, watch and decide tasks.

`switchboard task ...` acts through the API as the user (`_cli_run`: the API's tenant
and role checks apply); `switchboard task --direct ...` is the operator's route straight
to Temporal (no identity checks). Exit codes: 0 success, 1 bad input / unknown task /
wrong phase / refused, 2 usage, configuration or not signed in, 3 the API, Temporal (or
every worker) unreachable, 130 interrupted.

Heavy modules (temporalio, FastAPI, the stack) are imported inside commands so
`switchboard --help` stays quick and every command imports on its own.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Annotated, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from entrypoints import _cli_processes as processes
from entrypoints import _cli_render as render
from entrypoints._cli_audit import audit as _audit
from entrypoints._cli_common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from entrypoints._cli_common import fail as _fail
from entrypoints._cli_common import out as _out
from entrypoints._cli_run import Tasks, cli_options, run_tasks, task_options
from switchboard.models import FollowNotice, Role

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_UNAVAILABLE", "EXIT_USAGE", "app", "main"]

_T = TypeVar("_T")

app = typer.Typer(
    name="switchboard",
    help="Durable orchestration of sandboxed coding subagents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
task_app = typer.Typer(help="Delegate, watch, inspect and decide tasks.", no_args_is_help=True)
app.add_typer(task_app, name="task")

TaskId = Annotated[str, typer.Argument(help="The task id (task-...).", show_default=False)]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
User = Annotated[
    str,
    typer.Option(
        "--user",
        envvar="SWITCHBOARD_USER",
        help="Who you are in local auth mode (a verifying API takes you from your token).",
    ),
]


def main() -> NoReturn:
    """Run the command, then exit without finalizing the interpreter.

    The Temporal SDK's Rust threads can outlive the command and touch the GIL while
    the interpreter finalizes, aborting the process (exit 134, temporalio sdk-python
    #300) after the command already succeeded. Every command's own cleanup runs
    inside it; what is left is flushed here before `os._exit`.
    """
    try:
        app()
        code = 0
    except SystemExit as exc:
        code = _exit_status(exc.code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _exit_status(code: object) -> int:
    """`SystemExit.code` as a process exit status (a message goes to stderr, as Python does)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


# ---- plumbing -------------------------------------------------------------------------


app.callback()(cli_options)
task_app.callback()(task_options)


def _print_json(payload: str) -> None:
    typer.echo(payload)


# ---- task commands ------------------------------------------------------------------------


@task_app.command("submit")
def submit(
    repo: Annotated[str, typer.Option(help="Local path or git URL of the repository.")],
    goal: Annotated[str, typer.Option(help="What the task should achieve.")],
    subtask: Annotated[
        list[str] | None,
        typer.Option("--subtask", help="A subtask title (repeat; omit to let the planner split)."),
    ] = None,
    role: Annotated[Role | None, typer.Option(help="Role of every --subtask.")] = None,
    max_parallel: Annotated[int | None, typer.Option(help="Subagents running at once.")] = None,
    base: Annotated[str | None, typer.Option(help="Base branch, tag or commit.")] = None,
    push: Annotated[bool, typer.Option("--push", help="Push the merged branch.")] = False,
    no_review: Annotated[bool, typer.Option("--no-review", help="Skip the reviewer.")] = False,
    request_id: Annotated[
        str | None, typer.Option(help="Idempotency key: the same id starts the task once.")
    ] = None,
    user: User = "local",
    as_json: JsonFlag = False,
) -> None:
    """Delegate a task; prints its id at once (the task runs in the background)."""
    from switchboard.models import TaskRequest

    if role is not None and not subtask:
        raise typer.BadParameter("--role sets the role of each --subtask; give --subtask too")
    fields: dict[str, object] = {
        "goal": goal,
        "repo": repo,
        "base_ref": base,
        "subtasks": [
            {"title": title, **({"role": role} if role else {})} for title in subtask or []
        ],
        "push": push,
        "review": not no_review,
        "owner": user,
        "request_id": request_id,
    }
    if max_parallel is not None:
        fields["max_parallel"] = max_parallel
    try:
        request = TaskRequest.model_validate(fields)
    except ValidationError as exc:
        _fail(render.validation_message(exc.errors()))
    submitted = run_tasks(lambda tasks: tasks.submit(request), user)
    if as_json:
        _print_json(submitted.model_dump_json())
        return
    typer.echo(submitted.task_id)
    if not submitted.created:
        Console(stderr=True).print("(already started for this request id)", highlight=False)
    if submitted.notice:  # e.g. a tenant limit lowered max_parallel: said, never silent
        typer.echo(f"note: {submitted.notice}", err=True)  # one line, never wrapped


@task_app.command("list")
def list_tasks(
    owner: Annotated[
        str | None,
        typer.Option("--owner", help="Only this owner's tasks (default: all you may see)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    user: User = "local",
    as_json: JsonFlag = False,
) -> None:
    """Recent tasks you may see, newest activity first."""
    tasks = run_tasks(lambda service: service.list(owner=owner, limit=limit), user)
    if as_json:
        _print_json(json.dumps([task.model_dump(mode="json") for task in tasks]))
        return
    console = _out()
    if console.is_terminal:
        console.print(render.summaries_table(tasks))
    else:
        for line in render.summaries_lines(tasks):
            typer.echo(line)


@task_app.command("status")
def status(task_id: TaskId, user: User = "local", as_json: JsonFlag = False) -> None:
    """Phase, subagents (role, state, steps, tokens), review, approvals and diff stats."""
    current = run_tasks(lambda tasks: tasks.status(task_id), user)
    if as_json:
        _print_json(current.model_dump_json(indent=2))
        return
    _out().print(render.status_view(current))


@task_app.command("logs")
def logs(
    task_id: TaskId,
    subagent: Annotated[int | None, typer.Option(min=1, help="Only this subagent.")] = None,
    user: User = "local",
    as_json: JsonFlag = False,
) -> None:
    """Each subagent's last tool calls: how each ended and an excerpt of its output."""
    current = run_tasks(lambda tasks: tasks.status(task_id), user)
    chosen = [s for s in current.subagents if subagent is None or s.index == subagent]
    if subagent is not None and not chosen:
        _fail(f"task {task_id} has no subagent #{subagent}")
    if as_json:
        _print_json(json.dumps({s.index: [t.model_dump() for t in s.tools] for s in chosen}))
        return
    for line in render.tool_log_lines(chosen):
        typer.echo(line)


@task_app.command("watch")
def watch(
    task_id: TaskId,
    from_offset: Annotated[int, typer.Option("--from", min=0, help="First event offset.")] = 0,
    user: User = "local",
    as_json: JsonFlag = False,
) -> None:
    """Print events live until the task ends; Ctrl-C prints where to resume.

    While no worker answers, the watch goes on and says so on stderr (and again
    when the events flow).
    """
    next_offset = from_offset
    console = _out()

    async def follow(service: Tasks) -> None:
        nonlocal next_offset
        async for event in service.watch(task_id, from_offset):
            if isinstance(event, FollowNotice):  # to stderr: stdout holds the task's events
                Console(stderr=True).print(render.notice_line(event), highlight=False)
                continue
            if as_json:
                console.out(event.model_dump_json(), highlight=False)
            else:
                console.print(render.event_line(event), highlight=False)
            next_offset = event.offset + 1

    try:
        run_tasks(follow, user)
    except KeyboardInterrupt:
        Console(stderr=True).print(
            f"stopped at offset {next_offset}; resume with: "
            f"switchboard task watch {task_id} --from {next_offset}",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None


@task_app.command("diff")
def diff(
    task_id: TaskId,
    subagent: Annotated[int | None, typer.Option(min=1, help="One subagent's diff.")] = None,
    stat: Annotated[bool, typer.Option("--stat", help="Only the files and line counts.")] = False,
    user: User = "local",
    as_json: JsonFlag = False,
) -> None:
    """The task's diff (or one subagent's), read from git."""
    view = run_tasks(lambda tasks: tasks.diff(task_id, subagent), user)
    if as_json:
        _print_json(view.model_dump_json(indent=2))
        return
    render.render_diff(_out(), view, stat_only=stat)


@task_app.command("approve")
def approve(
    task_id: TaskId,
    comment: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    drop_failed: Annotated[
        bool, typer.Option(help="Partial result: merge the rest without the failed workers.")
    ] = False,
    user: User = "local",
    as_json: JsonFlag = False,
) -> None:
    """Approve the diff; the task merges it."""
    from switchboard.models import ApproveInput

    decision = _validated(lambda: ApproveInput(by=user, comment=comment, drop_failed=drop_failed))
    record = run_tasks(lambda tasks: tasks.approve(task_id, decision), user)
    _show_record(record, as_json)


@task_app.command("request-changes")
def request_changes(
    task_id: TaskId,
    feedback: Annotated[str, typer.Option(help="What should change.")] = "",
    only_failed: Annotated[
        bool, typer.Option(help="Partial result: re-run only the workers that failed.")
    ] = False,
    rebase: Annotated[
        bool, typer.Option(help="The target moved: rebase onto its tip, review, park again.")
    ] = False,
    user: User = "local",
    as_json: JsonFlag = False,
) -> None:
    """Send the subagents back to work with feedback (`--only-failed`: only the failed;
    `--rebase`: no worker, the change moves onto the target branch's new tip)."""
    from switchboard.models import RequestChangesInput

    decision = _validated(
        lambda: RequestChangesInput(
            by=user, feedback=feedback, only_failed=only_failed, rebase=rebase
        )
    )
    record = run_tasks(lambda tasks: tasks.request_changes(task_id, decision), user)
    _show_record(record, as_json)


@task_app.command("reject")
def reject(
    task_id: TaskId,
    comment: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    user: User = "local",
    as_json: JsonFlag = False,
) -> None:
    """Reject the diff; the task ends without merging."""
    from switchboard.models import RejectInput

    decision = _validated(lambda: RejectInput(by=user, comment=comment))
    record = run_tasks(lambda tasks: tasks.reject(task_id, decision), user)
    _show_record(record, as_json)


@task_app.command("cancel")
def cancel(task_id: TaskId, user: User = "local") -> None:
    """Stop the task; it removes its worktrees and sandboxes and ends as cancelled."""
    run_tasks(lambda tasks: tasks.cancel(task_id), user)
    typer.echo(f"cancellation requested for {task_id}")


@task_app.command("steer")
def steer(
    task_id: TaskId,
    guidance: Annotated[str, typer.Option(help="New guidance for the running subagents.")],
    user: User = "local",
) -> None:
    """Give the running subagents new guidance."""
    from switchboard.models import SteerInput

    message = _validated(lambda: SteerInput(by=user, guidance=guidance))
    run_tasks(lambda tasks: tasks.steer(task_id, message), user)
    typer.echo(f"guidance sent to {task_id}")


def _validated(build: Callable[[], _T]) -> _T:
    try:
        return build()
    except ValidationError as exc:
        _fail(render.validation_message(exc.errors()))


def _show_record(record: object, as_json: bool) -> None:
    from switchboard.models import ApprovalRecord

    assert isinstance(record, ApprovalRecord)
    if as_json:
        _print_json(record.model_dump_json())
    else:
        typer.echo(render.approval_line(record))


task_app.command("audit")(_audit)


# ---- processes ----------------------------------------------------------------------------

app.command("up")(processes.up)
app.command("worker")(processes.worker)
app.command("model-server")(processes.model_server)
app.command("api")(processes.api)
app.command("demo")(processes.demo)
app.command("doctor")(processes.doctor)
app.command("chat")(importlib.import_module("entrypoints._cli_chat").chat)
_auth = importlib.import_module("entrypoints._cli_auth")
app.add_typer(_auth.token_app, name="token")
app.command("login")(_auth.login)
