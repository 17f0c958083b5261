"""`python -m bench [--quick] [--no-write] [--only NAME ...]`: every benchmark, one table."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import time
import traceback
from types import ModuleType

from bench import BENCHMARKS, _worktrees
from bench._report import (
    DOCS,
    TIMES,
    Options,
    Report,
    Row,
    machine,
    print_report,
    stop_cleanly_on_sigterm,
    text_table,
    update_docs,
)

CONVERSATION = "chat_latency"
"""Has its own entry point and writes its own section of the docs."""


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the Switchboard benchmarks.")
    parser.add_argument("--quick", action="store_true", help="smoke runs; write nothing")
    parser.add_argument("--no-write", action="store_true", help="leave docs/benchmarks.md alone")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    args = parser.parse_args()
    options = Options(quick=args.quick, write=not (args.quick or args.no_write))
    stop_cleanly_on_sigterm()
    print(f"# Switchboard benchmarks — {machine()}", flush=True)
    reports: list[Report] = []
    started = time.monotonic()
    selected = args.only or BENCHMARKS
    _worktrees.KEEP_FOR_SANDBOX_START = "big_repo" in selected and "sandbox_start" in selected
    for name in selected:
        module = importlib.import_module(f"bench.{name}")
        began, measured = time.monotonic(), machine()
        try:
            if name == CONVERSATION:
                report = _conversation(module, options)
            else:
                report = asyncio.run(module.run(options))
        except Exception as exc:  # one broken benchmark must not hide the others' results
            traceback.print_exc()
            report = Report(
                key=name,
                title=name,
                rows=[Row(f"{name}: did not finish", f"error: {exc}"[:120], "—", None, "—", False)],
                details=f"The run failed: `{type(exc).__name__}: {exc}`",
            )
        report.seconds = time.monotonic() - began
        report.measured = measured
        print_report(report)
        reports.append(report)
    print()
    print(f"== All benchmarks ({time.monotonic() - started:.0f} s)")
    print(text_table([row for r in reports for row in r.rows]))
    if options.write:
        finished = [r for r in reports if not r.rows[0].benchmark.endswith("did not finish")]
        update_docs([r for r in finished if r.key != CONVERSATION])
        print(f"wrote {DOCS}")


def _conversation(module: ModuleType, options: Options) -> Report:
    """Run the conversation benchmark (its own API), write its own section, keep its rows."""
    began = time.monotonic()
    table, ttft, events = asyncio.run(module.run(options.quick, module.TASK_STEP_MS))
    if options.write:
        module.write_docs(module.section(table, ttft, events, time.monotonic() - began))
    rows = [
        Row(
            cells[0],
            cells[1],
            cells[2],
            _ratio(cells[3]),
            cells[4],
            {"pass": True, "FAIL": False}.get(cells[5]),
        )
        for cells in table
    ]
    return Report(key=CONVERSATION, title="Conversation", rows=rows, details="")


def _ratio(cell: str) -> float | None:
    try:
        return float(cell.rstrip(TIMES).rstrip("x"))
    except ValueError:
        return None


if __name__ == "__main__":
    main()
