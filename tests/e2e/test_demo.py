"""The README's `make demo`, run as written in a fresh clone, non-interactive.

Every component is a real process on free ports: the embedded Temporal dev
server, the scripted model, the worker (bubblewrap sandbox) and the API.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from testkit import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_make_demo_runs_a_task_end_to_end(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    # Use this test run's environment instead of installing a second one: point VENV at
    # it and make its stamp newer than the clone's pyproject so `setup` has nothing to do.
    venv = Path(sys.executable).parent.parent
    os.utime(clone / "pyproject.toml", (0, 0))
    env = dict(os.environ)
    env.update(
        {
            "SWITCHBOARD_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
            "SWITCHBOARD_TEMPORAL_UI_PORT": str(free_port()),
            "SWITCHBOARD_MODEL_SERVER_PORT": str(free_port()),
            "SWITCHBOARD_API_PORT": str(free_port()),
            "SWITCHBOARD_HOST_ID": f"demo{uuid.uuid4().hex[:8]}",
            "SWITCHBOARD_SANDBOX": "bwrap",
            "SWITCHBOARD_WORKER_METRICS_PORT": str(free_port()),
            "COLUMNS": "120",
        }
    )
    for key in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SWITCHBOARD_LLM_API_KEY"):
        env.pop(key, None)
    stamp = venv / ".installed"
    if not stamp.exists():
        stamp.touch()
    done = subprocess.run(
        ["make", "--no-print-directory", "demo", f"VENV={venv}"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    (ROOT / "test-artifacts" / "demo-output.txt").write_text(output)
    assert done.returncode == 0, output[-4000:]
    assert "Chat" in output and "Temporal UI" in output  # opens with the chat URL
    assert "approval" in output.lower()
    assert "Merged task-" in output and "into branch switchboard/task-" in output
    repo = clone / ".switchboard" / "demo-repo"
    branches = subprocess.run(
        ["git", "branch", "--list", "switchboard/*"], cwd=repo, capture_output=True, text=True
    ).stdout
    assert "switchboard/task-" in branches
    # The stack stopped: nothing listens on the ports any more.
    host, port = env["SWITCHBOARD_TEMPORAL_ADDRESS"].split(":")
    with socket.socket() as s:
        assert s.connect_ex((host, int(port))) != 0
