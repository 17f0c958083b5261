"""Sandbox start and exec overhead, per backend, on worktrees of the large repository.

Six worktrees of the generated ~50,000-file repository (`bench.make_big_repo`);
on them, every backend that can run here starts six sandboxes (start plus a first
`true`, one at a time for the per-subagent figure, then all six together), and
runs `true` 30 times in one sandbox against 30 bare subprocesses. Compared with
plain `git worktree add` of the same six. A backend that cannot run here (no
Docker daemon, no image) is reported as such, never silently skipped.

    python -m bench.sandbox_start [--quick]
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

from activities.sandbox import Sandbox, SandboxUnavailable, select_backend
from bench import _worktrees
from bench._env import workdir
from bench._report import Options, Report, Row, run_main
from bench._tasks import new_task_id
from bench._worktrees import (
    big_repo,
    host_settings,
    prepare,
    remove_switchboard_worktrees,
    switchboard_worktree,
    timed,
    warm,
)
from switchboard.contracts import SandboxSpec
from switchboard.models import Role

SUBAGENTS = 6
EXEC_RUNS = 30
START_TARGET = 0.3
EXEC_TARGET_MS = 30.0
BACKENDS = ("docker", "bwrap")
BASELINE_OWN = "`git worktree add` (through Switchboard's `create_worktree`)"
BASELINE_B5 = "plain `git worktree add` (measured by B5 in the same run)"


@dataclass
class Backend:
    name: str
    unavailable: str = ""
    starts: list[float] = field(default_factory=list)
    together: float = 0.0
    exec_ms: list[float] = field(default_factory=list)


async def _bare_ms(runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec("true")
        await process.wait()
        out.append((time.monotonic() - started) * 1000)
    return out


async def _measure(box: Sandbox, specs: list[SandboxSpec], result: Backend, runs: int) -> None:
    async def start(spec: SandboxSpec) -> float:
        began = time.monotonic()
        await box.start(spec)
        await box.exec(spec, ["true"], timeout=30, output_limit=4096)
        return time.monotonic() - began

    for spec in specs:  # one at a time: what one subagent waits for
        result.starts.append(await start(spec))
    for spec in specs:
        await box.stop(spec.sandbox_id)
    _, result.together = await timed([start(s) for s in specs])
    for _ in range(runs):
        began = time.monotonic()
        await box.exec(specs[0], ["true"], timeout=30, output_limit=4096)
        result.exec_ms.append((time.monotonic() - began) * 1000)
    for spec in specs:
        await box.stop(spec.sandbox_id)


async def run(options: Options) -> Report:
    runs = 5 if options.quick else EXEC_RUNS
    with workdir("sandbox-start") as scratch:
        if _worktrees.HANDOFF and not options.quick:
            # Made by B5 in this same run: the same six worktrees, and B5's plain
            # `git worktree add` of the same commit as the baseline.
            handoff = _worktrees.HANDOFF.pop()
            settings, prepared, task_id = handoff.settings, handoff.prepared, handoff.task_id
            infos, plain_wall, baseline = handoff.worktrees, handoff.plain_wall, BASELINE_B5
        else:
            repo = big_repo(options.quick, scratch)
            settings = host_settings(options.quick, scratch)
            prepared, _ = await asyncio.to_thread(prepare, settings, repo)
            await asyncio.to_thread(warm, prepared.mirror_path)
            task_id = new_task_id()
            infos, plain_wall = await timed(
                [
                    switchboard_worktree(settings, prepared, task_id, i)
                    for i in range(1, SUBAGENTS + 1)
                ]
            )
            baseline = BASELINE_OWN
        specs = [
            SandboxSpec(
                sandbox_id=f"{task_id}-{i}",
                worktree_path=info.path,
                role=Role.WORKER,
                mirror_path=prepared.mirror_path,
            )
            for i, info in enumerate(infos, start=1)
        ]
        bare = await _bare_ms(runs)
        results = []
        try:
            for name in BACKENDS:
                result = Backend(name)
                results.append(result)
                try:
                    box = select_backend(settings.model_copy(update={"sandbox": name}))
                except SandboxUnavailable as exc:
                    result.unavailable = str(exc)
                    continue
                try:
                    await _measure(box, specs, result, runs)
                finally:
                    await box.remove_task(task_id)
        finally:
            remove_switchboard_worktrees(settings, prepared, task_id)
    return _report(results, plain_wall, baseline, bare, options)


def _report(
    results: list[Backend], plain_wall: float, baseline: str, bare: list[float], options: Options
) -> Report:
    per_worktree = plain_wall / SUBAGENTS
    bare_ms = statistics.median(bare)
    rows = []
    lines = [
        f"{SUBAGENTS} worktrees of the generated repository; {baseline} of all six "
        f"together took {plain_wall:.2f} s ({per_worktree:.2f} s per subagent). Sandbox "
        f"start = `start()` + a first `true`; exec overhead = median of {len(bare)} runs of "
        f"`true` in the sandbox minus a bare `true` subprocess ({bare_ms:.1f} ms).",
        "",
        "| Backend | Start, one at a time (median / max, s) | Six together (s) | "
        "`true` in sandbox (median ms) | Overhead per call (ms) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        if r.unavailable:
            lines.append(f"| {r.name} | unavailable: {r.unavailable[:160]} | — | — | — |")
            rows.append(Row(f"Sandbox start ({r.name})", "unavailable", "—", None, "—", None))
            continue
        start = statistics.median(r.starts)
        exec_ms = statistics.median(r.exec_ms)
        overhead = exec_ms - bare_ms
        lines.append(
            f"| {r.name} | {start:.3f} / {max(r.starts):.3f} | {r.together:.2f} | "
            f"{exec_ms:.1f} | {overhead:.1f} |"
        )
        rows += [
            Row(
                f"Sandbox start per subagent ({r.name})",
                f"{start:.3f} s",
                f"worktree add {per_worktree:.2f} s",
                (per_worktree + start) / per_worktree,
                f"≤ {START_TARGET} s",
                start <= START_TARGET,
            ),
            Row(
                f"Sandbox exec overhead per tool call ({r.name})",
                f"{exec_ms:.1f} ms",
                f"bare {bare_ms:.1f} ms",
                exec_ms / bare_ms if bare_ms else None,
                f"≤ +{EXEC_TARGET_MS:.0f} ms",
                overhead <= EXEC_TARGET_MS,
            ),
        ]
    notes = ["--quick: a small repository, few runs; not a measurement"] if options.quick else []
    return Report(
        key="sandbox_start",
        title="Sandbox start and exec overhead",
        rows=rows,
        details="\n".join(lines),
        notes=notes,
    )


def main() -> None:
    run_main(run, "Sandbox start and exec overhead")


if __name__ == "__main__":
    main()
