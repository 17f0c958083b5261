"""`switchboard doctor`: what this host can run, and what the sandbox guarantees here.

Each check says what it found and, when something is wrong, what to do. The exit
code is 0 only when a task could run end to end with these settings.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass

import httpx
from rich.console import Console
from rich.table import Table

from entrypoints.devserver import port_open, split_address, temporal_binary
from switchboard.settings import Settings


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"error: {exc}"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def _data_dir_check(settings: Settings) -> Check:
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        probe = settings.data_dir / ".doctor"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return Check("data dir", False, f"{settings.data_dir}: {exc}")
    return Check("data dir", True, f"{settings.data_dir.resolve()} is writable")


def _checks(settings: Settings) -> tuple[list[Check], dict[str, object] | None]:
    checks = [
        Check("python", sys.version_info >= (3, 11), sys.version.split()[0]),
        Check("git", shutil.which("git") is not None, _version(["git", "--version"])),
    ]
    try:
        binary = temporal_binary()
        checks.append(Check("temporal CLI", True, f"{binary}: {_version([binary, '--version'])}"))
    except RuntimeError as exc:
        checks.append(Check("temporal CLI", False, str(exc), required=False))
    host, port = split_address(settings.temporal_address)
    checks.append(
        Check(
            "temporal server",
            port_open(host, port),
            f"{settings.temporal_address}: "
            + ("answers" if port_open(host, port) else "not running (`switchboard up` starts one)"),
            required=False,
        )
    )
    try:
        response = httpx.get(settings.model_base_url.rstrip("/") + "/models", timeout=3)
        model_ok = response.status_code < 500
        model_detail = f"{settings.model_base_url}: HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        model_ok = False
        model_detail = f"{settings.model_base_url}: {exc.__class__.__name__}" + (
            " (the scripted model starts with `switchboard up`)"
            if settings.uses_scripted_model
            else ""
        )
    checks.append(Check("model endpoint", model_ok, model_detail, required=False))
    checks.append(_data_dir_check(settings))

    guarantees: dict[str, object] | None = None
    from activities.sandbox import seccomp_status

    # Both backends refuse to start without it (Docker's exec agent loads the same program).
    checks.append(Check("seccomp filter", *seccomp_status(), required=False))
    try:
        from activities.sandbox import select_backend

        backend = select_backend(settings)
        guarantees = backend.describe()
        checks.append(
            Check(
                "sandbox",
                True,
                f"{guarantees.get('backend')} (SWITCHBOARD_SANDBOX={settings.sandbox})",
            )
        )
    except Exception as exc:  # any failure here means: no task can run its tools
        checks.append(Check("sandbox", False, f"SWITCHBOARD_SANDBOX={settings.sandbox}: {exc}"))
    return checks, guarantees


def preflight(settings: Settings) -> list[Check]:
    """The required checks that fail on this host: a worker cannot run while any does
    (`switchboard up` and `demo` refuse to start then)."""
    checks, _ = _checks(settings)
    return [check for check in checks if check.required and not check.ok]


def run_doctor(settings: Settings, console: Console | None = None) -> int:
    console = console or Console()
    checks, guarantees = _checks(settings)
    table = Table(title="switchboard doctor")
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    for check in checks:
        mark = (
            "[green]ok[/green]"
            if check.ok
            else ("[red]FAIL[/red]" if check.required else "[yellow]warn[/yellow]")
        )
        table.add_row(check.name, mark, check.detail)
    console.print(table)
    if guarantees:
        sandbox = Table(title=f"sandbox guarantees ({guarantees.get('backend')})")
        sandbox.add_column("guarantee")
        sandbox.add_column("how it holds here", overflow="fold")
        details = guarantees.get("guarantees")
        if isinstance(details, dict):
            for key, value in details.items():
                sandbox.add_row(str(key), str(value))
        console.print(sandbox)
    failed = [c for c in checks if c.required and not c.ok]
    return 1 if failed else 0
