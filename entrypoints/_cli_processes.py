"""The commands that run a process: the stack, a worker, the scripted model, the API,
the demo and the environment check. `entrypoints.cli` registers them on the
`switchboard` command; each imports its implementation only when it runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from entrypoints._cli_common import fail, load_settings

__all__ = ["api", "demo", "doctor", "entry_point", "model_server", "up", "worker"]


def up() -> None:
    """Run everything on this machine: Temporal, the model, a worker and the API."""
    from entrypoints.stack import StackError, run_up

    try:
        run_up(load_settings())
    except StackError as exc:
        fail(str(exc))


def worker(
    queues: Annotated[
        str,
        typer.Option(
            help="all: every queue in one process; tasks: the shared queue and this "
            "host's, at SWITCHBOARD_TASK_WORKER_NICE; chat: the chats' queue only."
        ),
    ] = "all",
) -> None:
    """Run a worker for the shared queue, this host's queue and the chats'."""
    from entrypoints.worker import Queues, run_worker

    try:
        chosen = Queues(queues)
    except ValueError:
        fail(f"--queues must be one of {', '.join(Queues)}, not {queues!r}")
    run_worker(load_settings(), chosen)


def model_server(
    host: Annotated[str | None, typer.Option(help="Default: settings.model_server_host.")] = None,
    port: Annotated[int | None, typer.Option(help="Default: settings.model_server_port.")] = None,
    scenario: Annotated[
        Path | None, typer.Option(help="Scenario file (YAML/JSON); default: the demo.")
    ] = None,
    latency_ms: Annotated[int | None, typer.Option(min=0, help="Delay per reply.")] = None,
    token_rate: Annotated[
        float, typer.Option(min=0, help="Streamed tokens per second (0: unpaced).")
    ] = 0.0,
) -> None:
    """Serve the scripted OpenAI-compatible model (a test double, no API key)."""
    from switchboard.model_server import serve

    settings = load_settings()
    serve(
        host or settings.model_server_host,
        port if port is not None else settings.model_server_port,
        scenario or settings.model_server_scenario,
        latency_ms if latency_ms is not None else settings.model_server_latency_ms,
        token_rate,
    )


def api(
    host: Annotated[str | None, typer.Option(help="Default: settings.api_host.")] = None,
    port: Annotated[int | None, typer.Option(help="Default: settings.api_port.")] = None,
) -> None:
    """Serve the HTTP API (REST, SSE, /docs, /metrics)."""
    import uvicorn

    from api.main import create_app

    settings = load_settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.api_host,
        port=port if port is not None else settings.api_port,
        log_level="info",
    )


def demo(
    non_interactive: Annotated[
        bool,
        typer.Option(
            "--non-interactive", help="Play one scripted conversation end to end; no prompts."
        ),
    ] = False,
) -> None:
    """Start the stack and chat: delegate a task, watch it, approve it, see the merge."""
    from entrypoints.stack import StackError

    run_demo = entry_point("entrypoints.demo", "run_demo")
    try:
        ended_well = run_demo(load_settings(), interactive=not non_interactive)
    except StackError as exc:
        fail(str(exc))
    if not ended_well:
        raise typer.Exit(1)


def doctor() -> None:
    """Check this machine: Temporal, sandbox backend, git, model."""
    run_doctor = entry_point("entrypoints.doctor", "run_doctor")
    result = run_doctor(load_settings())
    if isinstance(result, int) and result:
        raise typer.Exit(result)


def entry_point(module: str, name: str) -> Callable[..., Any]:
    """A command's implementation, imported only when that command runs."""
    try:
        function: Callable[..., Any] = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        fail(f"this build has no {module}.{name} ({exc})")
    return function
