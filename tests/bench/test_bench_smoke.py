"""Smoke runs of every benchmark: `python -m bench.<name> --quick` runs and prints its table.

Benchmarks are measurements, not tests: nothing here checks a time or a ratio, only
that each benchmark still runs end to end against the real components (dev server,
scripted model, git, sandbox) and reports its rows. `--quick` writes no docs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import BENCHMARKS
from bench._report import DOCS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TITLES = {
    "overhead": "B1 overhead",
    "recovery": "B2 recovery",
    "idle": "B3 idle",
    "scale": "B4 scale",
    "big_repo": "B5 big repo",
    "sandbox_start": "Sandbox start per subagent",
    "auth_cost": "auth: tokens vs local",
}


@pytest.mark.parametrize("name", list(TITLES))
def test_benchmark_runs_quick_and_prints_its_table(name: str) -> None:
    docs_before = DOCS.read_bytes() if DOCS.exists() else None
    # bwrap: the smoke run checks the benchmark's own code, not a shared Docker daemon
    # (sandbox_start still tries Docker, and reports it unavailable if it is).
    env = {**os.environ, "SWITCHBOARD_SANDBOX": "bwrap"}
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Benchmark "))
    for column in ("Switchboard", "Baseline", "Ratio", "Target", "Result"):
        assert column in lines[header]
    rows = [line for line in lines[header + 2 :] if line.strip() and not line.startswith("  -")]
    assert rows, done.stdout
    assert any(row.startswith(TITLES[name]) for row in rows), rows
    for row in rows:
        assert row.split()[-1] in ("pass", "FAIL", "info"), row
    # A quick run is a smoke run: it must leave the recorded results alone.
    assert (DOCS.read_bytes() if DOCS.exists() else None) == docs_before


def test_every_benchmark_module_is_listed() -> None:
    modules = {p.stem for p in (ROOT / "bench").glob("*.py") if not p.stem.startswith("_")}
    assert modules - {"make_big_repo"} == set(BENCHMARKS)
    assert set(TITLES) <= set(BENCHMARKS)
