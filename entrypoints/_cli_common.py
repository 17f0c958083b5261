"""What every `switchboard` command shares: exit codes, output, errors, settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

from entrypoints import _cli_render as render

if TYPE_CHECKING:
    from switchboard.settings import Settings

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "fail",
    "load_settings",
    "out",
]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130


def out() -> Console:
    return Console(soft_wrap=True)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    Console(stderr=True, soft_wrap=True).print(f"error: {message}", markup=False, highlight=False)
    raise typer.Exit(code)


def load_settings() -> Settings:
    from switchboard.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        fail(f"configuration: {render.validation_message(exc.errors())}", EXIT_USAGE)
