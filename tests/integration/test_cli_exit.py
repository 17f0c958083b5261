"""`switchboard task ...` as a process exits with its own status, never an abort.

The Temporal SDK's Rust threads could touch the GIL while the interpreter
finalized, so a command that had printed its answer sometimes died with
SIGABRT (exit 134, `PyGILState_Release ... finalizing`; temporalio sdk-python
#300). Measured before the fix: 6 aborts in 50 runs. Only the operator's route
(`task --direct`) runs the Temporal SDK in the CLI process, so that is what runs here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from temporalio.testing import WorkflowEnvironment

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

RUNS = 50
PARALLEL = 4
UNKNOWN_TASK = "task-00000000000000000000000000"


def _run(env: dict[str, str], index: int) -> tuple[list[str], int, str]:
    args = (
        ["task", "--direct", "list"] if index % 2 else ["task", "--direct", "status", UNKNOWN_TASK]
    )
    done = subprocess.run(
        [sys.executable, "-m", "entrypoints", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return args, done.returncode, done.stderr


def test_task_list_and_status_exit_50_times_without_an_abort(
    temporal_env: WorkflowEnvironment,
) -> None:
    env = dict(os.environ)
    env.update(
        {
            "SWITCHBOARD_TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
            "SWITCHBOARD_TASK_QUEUE": "cli-exit",
            "SWITCHBOARD_USER": "alice",
        }
    )
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(lambda i: _run(env, i), range(RUNS)))
    aborted = [(args, code) for args, code, err in results if code < 0 or "Fatal Python" in err]
    assert aborted == [], f"{len(aborted)} of {RUNS} runs aborted: {aborted[:5]}"
    expected = {"list": 0, "status": 1}  # the unknown task is reported as such
    wrong = [
        (args, code, err[-300:])
        for args, code, err in results
        if code != expected[args[-1] if args[-1] == "list" else "status"]
    ]
    assert wrong == [], wrong[:3]
    statuses = [err for args, _, err in results if "status" in args]
    assert all(UNKNOWN_TASK in err for err in statuses), statuses[:1]
