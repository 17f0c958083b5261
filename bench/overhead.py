"""B1 — orchestration overhead: one task through Switchboard vs a plain asyncio runner.

The task: 6 worker subagents x 10 steps (a model turn with one tool call each,
then a `finish` turn) on a real repository, merged at the end. Both sides call
the same scripted model (own process, 100 ms per call), the same git code and
the same sandbox; the plain side has no Temporal (see `bench._plain`).
Switchboard runs twice: on the dev server as `switchboard.devserver` starts it,
and with `history.transferProcessorMaxPollRPS` raised (the fix for the cause this
benchmark found). Runs alternate so machine noise falls on all sides alike.

    python -m bench.overhead [--quick]
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client

from activities.sandbox import Sandbox, select_backend
from bench._env import (
    MODEL_LATENCY_MS,
    MODEL_TOKEN_RATE,
    TUNED_DEV_SERVER,
    bench_settings,
    dev_server,
    model_process,
    ships_tuned,
    workdir,
)
from bench._plain import PlainRunner
from bench._report import TIMES, Options, Report, Row, run_main
from bench._scenarios import make_small_repo, steps_scenario
from bench._tasks import HistoryProfile, new_task_id, profile_task, start_task, wait_phase
from switchboard.models import Budget, Phase, Role, SubtaskSpec, TaskRequest
from switchboard.settings import Settings
from switchboard.temporal import connect
from switchboard.worker import build_workers, run_workers

TARGET = 1.10
GOAL = "Add a small helper and its test in each part of the project"


@dataclass
class Variant:
    name: str
    settings: Settings
    client: Client | None = None
    walls: list[float] = field(default_factory=list)
    first_steps: list[float] = field(default_factory=list)
    profile: HistoryProfile | None = None


def _subtasks(count: int) -> list[SubtaskSpec]:
    return [
        SubtaskSpec(title=f"Part {i}", instructions="Add a helper and a test.", role=Role.WORKER)
        for i in range(1, count + 1)
    ]


async def _switchboard_run(variant: Variant, repo: Path, subagents: int, steps: int) -> str:
    assert variant.client is not None
    request = TaskRequest(
        goal=GOAL,
        repo=str(repo),
        subtasks=_subtasks(subagents),
        review=False,
        budget=Budget(max_steps=steps + 5),
    )
    submitted = time.time()
    handle = await start_task(variant.client, variant.settings, request, new_task_id())
    reached = await wait_phase(handle, Phase.AWAITING_APPROVAL, timeout=600)
    variant.walls.append(reached.updated_at.timestamp() - submitted)
    firsts = [s.started_at.timestamp() for s in reached.subagents if s.started_at]
    if firsts:
        variant.first_steps.append(min(firsts) - submitted)
    return handle.id


async def run(options: Options) -> Report:
    subagents, steps, rounds = (2, 3, 1) if options.quick else (6, 10, 3)
    with workdir("overhead") as work:
        repo = make_small_repo(work / "repo")
        with (
            model_process(steps_scenario(steps), work) as model,
            dev_server(work) as shipped,
            dev_server(work, extra_args=TUNED_DEV_SERVER) as tuned,
        ):
            variants = [
                Variant(
                    "as shipped", bench_settings(work / "shipped", shipped.address, model.port)
                ),
                Variant(
                    "with the fixes", bench_settings(work / "tuned", tuned.address, model.port)
                ),
            ]
            if ships_tuned() or options.quick:
                variants = variants[:1]
            plain_settings = bench_settings(work / "plain", shipped.address, model.port)
            sandbox: Sandbox = select_backend(plain_settings)
            plain = PlainRunner(plain_settings, sandbox)
            stop = asyncio.Event()
            running = []
            for v in variants:
                v.client = await connect(v.settings)
                workers = build_workers(v.client, v.settings, sandbox=sandbox)
                running.append(asyncio.create_task(run_workers(workers, stop)))
            try:
                # Warm-up: mirrors cloned, imports and caches loaded, on every side.
                await plain.run(new_task_id(), str(repo), _subtasks(1), GOAL)
                for v in variants if not options.quick else []:
                    await _switchboard_run(v, repo, 1, 2)
                    v.walls.clear()
                    v.first_steps.clear()
                plain_walls: list[float] = []
                plain_firsts: list[float] = []
                task_ids: dict[str, str] = {}
                for _ in range(rounds):
                    result = await plain.run(new_task_id(), str(repo), _subtasks(subagents), GOAL)
                    plain_walls.append(result.wall)
                    plain_firsts.append(result.first_step)
                    for v in variants:
                        task_ids[v.name] = await _switchboard_run(v, repo, subagents, steps)
                for v in variants:
                    assert v.client is not None
                    v.profile = await profile_task(v.client, task_ids[v.name])
            finally:
                stop.set()
                await asyncio.gather(*running)
                await plain.close()
    return _report(variants, plain_walls, plain_firsts, subagents, steps, sandbox.name, options)


def _report(
    variants: list[Variant],
    plain_walls: list[float],
    plain_firsts: list[float],
    subagents: int,
    steps: int,
    backend: str,
    options: Options,
) -> Report:
    plain = statistics.median(plain_walls)
    rows = []
    shape = f"{subagents}x{steps} task"
    for v in variants:
        wall = statistics.median(v.walls)
        ratio = wall / plain
        label = f"dev server {v.name}"
        rows.append(
            Row(
                benchmark=f"B1 overhead, {shape}, {label}",
                switchboard=f"{wall:.2f} s",
                baseline=f"{plain:.2f} s plain",
                ratio=ratio,
                target=f"≤ {TARGET:.2f}{TIMES}",
                passed=ratio <= TARGET,
            )
        )
    lines = [
        f"Task: {subagents} worker subagents x {steps} steps (one model turn + one tool call "
        f"each, then a `finish` turn), merged at the end; no review. Model: scripted, own "
        f"process, {MODEL_LATENCY_MS} ms per call + {MODEL_TOKEN_RATE:.0f} tokens/s. Sandbox: "
        f"{backend}. Wall time from submit to the approval gate (Switchboard) / to the merge "
        f"(plain); median of {len(plain_walls)} alternating runs.",
        "",
        "| Side | Runs (s) | Median (s) | Submit → first model call (s) |",
        "|---|---|---|---|",
        f"| plain asyncio | {', '.join(f'{w:.2f}' for w in plain_walls)} | {plain:.2f} | "
        f"{statistics.median(plain_firsts):.2f} |",
    ]
    for v in variants:
        lines.append(
            f"| Switchboard, {v.name} | {', '.join(f'{w:.2f}' for w in v.walls)} | "
            f"{statistics.median(v.walls):.2f} | {statistics.median(v.first_steps):.2f} |"
        )
    lines += ["", "Where the difference goes (from the histories of the last run):", ""]
    for v in variants:
        assert v.profile is not None
        p = v.profile
        extra = statistics.median(v.walls) - plain
        per_agent_wfts = p.workflow_tasks / max(1, p.workflows)
        lines.append(
            f"- **{v.name}**: {p.describe()}. Extra wall {extra:+.2f} s over ≈ "
            f"{per_agent_wfts:.0f} sequential workflow-task round trips per subagent "
            f"({extra / max(1.0, per_agent_wfts) * 1000:.0f} ms each)."
        )
    notes = []
    if options.quick:
        notes.append("--quick: a smoke run with a smaller task; not a measurement")
    return Report(
        key="overhead",
        title="B1 — orchestration overhead",
        rows=rows,
        details="\n".join(lines) + "\n" + FINDINGS,
        notes=notes,
    )


FINDINGS = """
**Cause of the overhead (found with the server's own metrics).** Each subagent step
is three sequential round trips through the server: the `llm_turn` activity, the
`run_tools` activity and the awaited `subagent_progress` signal to the parent. On
the dev server each round trip waited ~40 ms between *workflow task scheduled* and
*started*, and the server's `task_latency_load` metric for
`TransferActiveTaskWorkflowTask` showed the same 40 ms: the history service's
transfer-queue reader, which hands new workflow tasks to matching, is rate limited
by `history.transferProcessorMaxPollRPS`, **20 reads/s by default**, and the dev
server has a single history shard, so every workflow on it shares that one reader.
A chain of activities therefore settles at 1/20 s ≈ 50 ms per step once the rate
limiter's burst (the "first ~28 are fast") is spent. Dose-response on a chain of 40
no-op activities: 10 reads/s → 102 ms per activity, 20 (default) → 51 ms,
1000 → 8 ms. Sticky queues, poller counts, eager activities and TCP were not it
(sticky off removed the wait only by replaying full histories; client and server
both set TCP_NODELAY). The fix is one flag where the dev server is started
(`switchboard/devserver.py`): `--dynamic-config-value
history.transferProcessorMaxPollRPS=1000`. A production cluster has hundreds of
history shards, each with its own reader, so it is far less exposed; raise the same
value there if per-task latency matters more than database read load.
"""


def main() -> None:
    run_main(run, "B1 — orchestration overhead")


if __name__ == "__main__":
    main()
