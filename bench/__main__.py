"""`python -m bench [--quick] [--no-write] [--only NAME ...]`: every benchmark, one table."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import time
import traceback

from bench import BENCHMARKS
from bench._report import (
    DOCS,
    Options,
    Report,
    Row,
    machine,
    print_report,
    text_table,
    update_docs,
)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the Switchboard benchmarks.")
    parser.add_argument("--quick", action="store_true", help="smoke runs; write nothing")
    parser.add_argument("--no-write", action="store_true", help="leave docs/benchmarks.md alone")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    args = parser.parse_args()
    options = Options(quick=args.quick, write=not (args.quick or args.no_write))
    print(f"# Switchboard benchmarks — {machine()}", flush=True)
    reports: list[Report] = []
    started = time.monotonic()
    for name in args.only or BENCHMARKS:
        module = importlib.import_module(f"bench.{name}")
        began = time.monotonic()
        try:
            report: Report = asyncio.run(module.run(options))
        except Exception as exc:  # one broken benchmark must not hide the others' results
            traceback.print_exc()
            report = Report(
                key=name,
                title=name,
                rows=[Row(f"{name}: did not finish", f"error: {exc}"[:120], "—", None, "—", False)],
                details=f"The run failed: `{type(exc).__name__}: {exc}`",
            )
        report.seconds = time.monotonic() - began
        print_report(report)
        reports.append(report)
    print()
    print(f"== All benchmarks ({time.monotonic() - started:.0f} s)")
    print(text_table([row for r in reports for row in r.rows]))
    if options.write:
        update_docs([r for r in reports if not r.rows[0].benchmark.endswith("did not finish")])
        print(f"wrote {DOCS}")


if __name__ == "__main__":
    main()
