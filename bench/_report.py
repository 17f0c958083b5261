"""Results: rows of the one table, per-benchmark sections of docs/benchmarks.md, the CLI.

Every benchmark returns a `Report`: summary rows (benchmark, Switchboard, baseline,
ratio, target, pass/fail) and a Markdown section with the details. `python -m
bench.<name>` prints the table; a full (not `--quick`) run also rewrites that
benchmark's section of docs/benchmarks.md, leaving every other section alone.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import re
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SUMMARY = "summary"
SECTION_ORDER = ("overhead", "recovery", "idle", "scale", "big_repo", "sandbox_start")
_INTRO = (
    "# Benchmarks\n\n"
    "`make bench` (or `python -m bench`) runs every benchmark below and prints one "
    "table; `python -m bench.<name> [--quick]` runs one. Each compares Switchboard "
    "with the plain alternative in the same run on the same machine, so the ratios "
    "hold even where the absolute times move with the hardware. The model is the "
    "scripted OpenAI-compatible server in its own process with a fixed latency "
    "(100 ms per call), identical on both sides. A full run rewrites its own section "
    "here; `--quick` runs write nothing. This machine is shared: each section gives "
    "the load average when it started.\n"
)
_BLOCK = re.compile(
    r"<!-- bench:(?P<key>[a-z0-9_]+):start -->.*?<!-- bench:(?P=key):end -->\n?", re.S
)
_ROWS = re.compile(r"<!-- rows:(?P<key>[a-z0-9_]+) -->\n(?P<rows>(?:\|.*\n)*)")
TIMES = "\u00d7"  # the multiplication sign of ratios (escaped: ruff flags it as ambiguous)
_HEADER = ("Benchmark", "Switchboard", "Baseline", "Ratio", "Target", "Result")


@dataclass
class Row:
    """One line of the summary table; `ratio` is Switchboard / baseline."""

    benchmark: str
    switchboard: str
    baseline: str
    ratio: float | None
    target: str
    passed: bool | None

    def cells(self) -> tuple[str, ...]:
        ratio = f"{self.ratio:.2f}{TIMES}" if self.ratio is not None else "—"
        result = {True: "pass", False: "FAIL", None: "info"}[self.passed]
        return (self.benchmark, self.switchboard, self.baseline, ratio, self.target, result)


@dataclass
class Report:
    """What one benchmark measured: summary rows and a Markdown section for the docs."""

    key: str
    title: str
    rows: list[Row]
    details: str
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    measured: str = ""
    """`machine()` when the benchmark began (its load, not the load when the docs are written)."""


@dataclass(frozen=True)
class Options:
    quick: bool
    write: bool


def machine() -> str:
    """Date, core count and platform: printed and written beside every result."""
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    return (
        f"{today}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, load average at start {load:.1f}"
    )


def text_table(rows: list[Row]) -> str:
    cells = [_HEADER, *(r.cells() for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(_HEADER))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(c))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[Row], header: bool = True) -> str:
    lines = []
    if header:
        lines += ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r.cells()) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def section(report: Report) -> str:
    """The Markdown block of one benchmark, between its markers."""
    body = [
        f"<!-- bench:{report.key}:start -->",
        f"## {report.title}",
        "",
        f"_Measured {report.measured or machine()}; took {report.seconds:.0f} s._",
        "",
        f"<!-- rows:{report.key} -->",
        markdown_table(report.rows, header=True).rstrip("\n"),
        "",
        report.details.strip(),
        "",
    ]
    if report.notes:
        body += [*(f"- {n}" for n in report.notes), ""]
    body.append(f"<!-- bench:{report.key}:end -->")
    return "\n".join(body) + "\n"


def update_docs(reports: list[Report], path: Path = DOCS) -> None:
    """Replace each report's section (and the summary) in docs/benchmarks.md.

    Sections of benchmarks not run now stay as they were, and so does text outside
    the markers and any section another module writes (the "Conversation" one).
    Sections are laid out as: introduction, summary, B1-B5 and sandbox start in
    order, then everyone else's.
    """
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    blocks = {m.group("key"): m.group(0) for m in _BLOCK.finditer(text)}
    outside = _BLOCK.sub("", text)
    head, _, tail = outside.partition("\n## ")
    tail = ("## " + tail) if tail else ""
    if "make bench" not in head:
        head = _INTRO
    for report in reports:
        blocks[report.key] = section(report)
    blocks[SUMMARY] = _summary_block("".join(blocks.values()))
    ours = [k for k in (SUMMARY, *SECTION_ORDER) if k in blocks]
    theirs = [k for k in blocks if k not in ours]
    body = "\n".join(blocks[k].rstrip("\n") + "\n" for k in (*ours, *theirs))
    out = (
        head.rstrip("\n") + "\n\n" + body + ("\n" + tail.strip("\n") + "\n" if tail.strip() else "")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(out, encoding="utf-8")


def _summary_block(text: str) -> str:
    rows = []
    for match in _ROWS.finditer(text):
        lines = [ln for ln in match.group("rows").splitlines() if ln.strip()]
        rows += [ln for ln in lines[2:]]  # skip each section's header and rule
    table = "| " + " | ".join(_HEADER) + " |\n|" + "---|" * len(_HEADER) + "\n"
    table += "\n".join(rows) + "\n"
    return (
        f"<!-- bench:{SUMMARY}:start -->\n"
        "## Summary\n\n"
        "Ratios are Switchboard / baseline, measured side by side in the same run "
        "(each section says when and on what machine).\n\n"
        f"{table}"
        f"<!-- bench:{SUMMARY}:end -->\n"
    )


def parse_options(argv: list[str] | None = None, description: str = "") -> Options:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a short smoke run; writes no docs")
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone"
    )
    args = parser.parse_args(argv)
    return Options(quick=args.quick, write=not (args.quick or args.no_write))


def stop_cleanly_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so dev servers and workers we started are stopped."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def run_main(
    run: Callable[[Options], Coroutine[Any, Any, Report]],
    description: str,
    argv: list[str] | None = None,
) -> None:
    """Entry point of `python -m bench.<name>`: run, print the table, maybe write the docs."""
    options = parse_options(argv, description)
    stop_cleanly_on_sigterm()
    measured = machine()
    print(f"# {description} — {measured}", flush=True)
    started = time.monotonic()
    report = asyncio.run(run(options))
    report.seconds = time.monotonic() - started
    report.measured = measured
    print_report(report)
    if not options.write and not options.quick:
        print(report.details)
    if options.write:
        update_docs([report])
        print(f"wrote the {report.key} section of {DOCS}")


def print_report(report: Report) -> None:
    print()
    print(f"== {report.title} ({report.seconds:.0f} s)")
    print(text_table(report.rows))
    for note in report.notes:
        print(f"  - {note}")
    sys.stdout.flush()
