"""`make soak`: every fault scenario for N rounds on one real stack, then the table.

    python -m tests.faults.soak --rounds 20 [--only SUBSTRING] [--out docs/reliability.md]

Each round runs every scenario (or those whose name contains --only) once, each
with a fresh repository and a worker process of its own; the shared checker
counts lost tasks, duplicated commands/decisions and false reports. The table is
written to --out with the rounds, kills and the wall time it took, so a short
soak cannot pass for a long one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from temporalio.client import Client

from switchboard.model_server import ModelServerHandle, builtin_scenario, running_model_server
from switchboard.settings import Settings
from testkit import make_repo, start_temporal_environment
from tests.faults.harness import Report, WorkerProcess, dead_worker_cgroups
from tests.faults.restarts import DECISION_RESTARTS, TEMPORAL_RESTARTS
from tests.faults.scenarios import (
    API_RESTARTS,
    CANCELS,
    LOST_FILES,
    MODEL_FAULTS,
    PERSISTENT_FAULTS,
    TARGET_MOVES,
    WORKER_KILLS,
    Stack,
)

SCENARIO_TIMEOUT = float(os.environ.get("SOAK_SCENARIO_TIMEOUT", "420"))
"""Seconds one scenario run may take before it is counted lost."""

SCENARIOS = {
    **WORKER_KILLS,
    **TEMPORAL_RESTARTS,
    **API_RESTARTS,
    **DECISION_RESTARTS,
    **MODEL_FAULTS,
    **PERSISTENT_FAULTS,
    **CANCELS,
    **LOST_FILES,
    **TARGET_MOVES,
}


@dataclass
class Row:
    runs: int = 0
    kills: int = 0
    errors: int = 0
    """Runs whose scenario itself broke (a timeout waiting for a phase): counted lost."""
    report: Report = field(default_factory=Report)
    loads: list[float] = field(default_factory=list)
    """The machine's 1-minute load average at the end of each run."""


async def soak(
    rounds: int, only: str | None, work: Path, out: Path, commit: str
) -> tuple[dict[str, Row], float]:
    """Run the rounds; the table is rewritten after every scenario run, so a soak cut
    short still leaves an honest table of what it did."""
    os.environ.setdefault("SWITCHBOARD_REPO_ROOTS", json.dumps([str(work), tempfile.gettempdir()]))
    names = [n for n in SCENARIOS if only is None or only in n]
    rows = {n: Row() for n in names}
    started = time.monotonic()
    env = await start_temporal_environment()
    try:
        address = env.client.service_client.config.target_host
        with running_model_server(builtin_scenario()) as model:
            for round_ in range(1, rounds + 1):
                for name in names:
                    await _one(name, rows[name], env.client, model, address, work, round_)
                    done = {n: r for n, r in rows.items() if r.runs}
                    out.write_text(
                        table(done, round_, time.monotonic() - started, commit), encoding="utf-8"
                    )
    finally:
        await env.shutdown()
    return rows, time.monotonic() - started


async def _one(
    name: str,
    row: Row,
    client: Client,
    model: ModelServerHandle,
    address: str,
    work: Path,
    round_: int,
) -> None:
    run = work / f"r{round_}-{uuid.uuid4().hex[:6]}"
    settings = Settings(
        data_dir=run / "data",
        task_queue=f"soak-{uuid.uuid4()}",
        host_id=f"h{uuid.uuid4().hex[:12]}",
        model_server_port=model.port,
        sandbox="bwrap",
        worker_metrics_port=0,
        temporal_address=address,
        llm_timeout_seconds=10,
        _env_file=None,
    )
    (run / "data").mkdir(parents=True)
    worker = WorkerProcess(settings, run / "worker.log")
    worker.start()
    row.runs += 1
    try:
        stack = Stack(client, settings, worker, model, make_repo(run / "repo"))
        row.report.add(await asyncio.wait_for(SCENARIOS[name](stack), SCENARIO_TIMEOUT))
    except Exception as exc:  # a broken run is counted; the soak goes on
        row.errors += 1
        row.report.add(Report(tasks=1, lost=1, problems=[f"{name}: {exc!r}"]))
        traceback.print_exc()
    finally:
        worker.stop()
        row.kills += worker.kills
        left = dead_worker_cgroups(worker.pids[:-1])
        if left:
            row.report.add(Report(false_reports=len(left), problems=[f"cgroups left: {left}"]))
    row.loads.append(os.getloadavg()[0])
    print(f"round {round_} {name}: {row.report.problems[-1:] or 'ok'}", flush=True)


def _load_range(rows: dict[str, Row]) -> str:
    loads = [load for row in rows.values() for load in row.loads]
    if not loads:
        return "not measured"
    return f"{min(loads):.1f} to {max(loads):.1f}, mean {sum(loads) / len(loads):.1f}"


def table(rows: dict[str, Row], rounds: int, seconds: float, commit: str) -> str:
    lines = [
        "# Reliability: the fault soak",
        "",
        "Written by `make soak` (`python -m tests.faults.soak`); do not edit by hand.",
        "Each scenario runs one task through one fault on the real stack (Temporal dev",
        "server, a worker process, bwrap, git, the scripted model with fault injection);",
        "the shared checker in tests/faults/harness.py counts a task **lost** when it did",
        "not reach the phase the scenario expects, **duplicated** for each command that",
        "ran twice or decision applied twice, and a **false report** for a wrong diff, a",
        "failure without a reason, a task parked at the gate looking healthy with every",
        "worker failed, or anything left behind (worktree, transcript, sandbox process,",
        "a killed worker's command cgroup). The Temporal scenarios run on a dev server of",
        "their own, SIGKILLed and started again on the same address and SQLite file. In",
        "the approval races the caller must always know whether its approval took: a",
        "last answer other than a 200 with the approval record is a false report.",
        "",
        f"Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on commit {commit}, {rounds} round(s)"
        " (the last one possibly cut short: see each row's runs),",
        f"on {os.cpu_count()} CPUs shared with other work (1-minute load average after each run:",
        f"{_load_range(rows)}),",
        f"{seconds / 60:.1f} minutes of wall time; SIGKILLs in all: "
        f"{sum(r.kills for r in rows.values())} of a worker, "
        f"{sum(r.report.temporal_kills for r in rows.values())} of the Temporal dev server, "
        f"{sum(r.report.api_kills for r in rows.values())} of the API.",
        "",
        "| scenario | runs | tasks | kills (worker / Temporal / API) | lost | duplicated "
        "| false reports |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        r = row.report
        kills = f"{row.kills} / {r.temporal_kills} / {r.api_kills}"
        lines.append(
            f"| {name} | {row.runs} | {r.tasks} | {kills} | {r.lost} | {r.duplicated} "
            f"| {r.false_reports} |"
        )
    problems = [p for row in rows.values() for p in row.report.problems]
    lines += ["", "## What went wrong", ""]
    lines += [f"- {p}" for p in problems] or ["Nothing: every count above is zero."]
    notes = [
        f"- {name}: {note} (in {count} run(s))"
        for name, row in rows.items()
        for note, count in Counter(row.report.notes).most_common()
    ]
    if notes:
        lines += ["", "## What the scenarios observed", "", *notes]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("SOAK_ROUNDS", "10")))
    parser.add_argument("--only", default=None)
    parser.add_argument("--out", type=Path, default=Path("docs/reliability.md"))
    args = parser.parse_args()
    commit = os.popen("git rev-parse --short HEAD").read().strip() or "unknown"
    with tempfile.TemporaryDirectory(prefix="switchboard-soak-") as work:
        rows, seconds = asyncio.run(soak(args.rounds, args.only, Path(work), args.out, commit))
    args.out.write_text(table(rows, args.rounds, seconds, commit), encoding="utf-8")
    print(args.out.read_text())
    bad = sum(r.report.lost + r.report.duplicated + r.report.false_reports for r in rows.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
