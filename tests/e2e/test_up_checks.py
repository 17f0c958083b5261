"""`switchboard up` refuses a host its worker cannot run on, and reports a component
that dies at once, with the end of its log."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from entrypoints.devserver import port_open
from testkit import free_port

pytestmark = pytest.mark.e2e


def _env(tmp_path: Path, ports: dict[str, int]) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SWITCHBOARD_LLM_API_KEY"):
        env.pop(key, None)
    env.update(
        {
            "SWITCHBOARD_DATA_DIR": str(tmp_path / "data"),
            "SWITCHBOARD_TEMPORAL_ADDRESS": f"127.0.0.1:{ports['temporal']}",
            "SWITCHBOARD_TEMPORAL_UI_PORT": str(ports["ui"]),
            "SWITCHBOARD_MODEL_SERVER_PORT": str(ports["model"]),
            "SWITCHBOARD_API_PORT": str(ports["api"]),
            "SWITCHBOARD_HOST_ID": f"up{uuid.uuid4().hex[:8]}",
            "SWITCHBOARD_SANDBOX": "bwrap",
            "SWITCHBOARD_WORKER_METRICS_PORT": str(ports["metrics"]),
        }
    )
    return env


def _ports() -> dict[str, int]:
    return {name: free_port() for name in ("temporal", "ui", "model", "api", "metrics")}


def test_up_without_bubblewrap_says_so_and_starts_nothing(tmp_path: Path) -> None:
    ports = _ports()
    env = _env(tmp_path, ports)
    bin_dir = tmp_path / "bin"  # git, but no bwrap on the PATH
    bin_dir.mkdir()
    git = shutil.which("git")
    assert git is not None
    (bin_dir / "git").symlink_to(git)
    env["PATH"] = str(bin_dir)
    up = subprocess.run(
        [sys.executable, "-m", "entrypoints", "up"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert up.returncode == 1, up.stdout + up.stderr
    assert "this host cannot run a worker" in up.stderr
    assert "sandbox" in up.stderr and "bubblewrap is not installed" in up.stderr
    assert not (tmp_path / "data" / "logs").exists()  # no component was started
    assert not any(port_open("127.0.0.1", port) for port in ports.values())


def test_up_reports_a_worker_that_dies_with_the_end_of_its_log(tmp_path: Path) -> None:
    ports = _ports()
    env = _env(tmp_path, ports)
    with socket.socket() as taken:  # the worker's metrics port is in use: it exits
        taken.bind(("127.0.0.1", ports["metrics"]))
        taken.listen()
        up = subprocess.run(
            [sys.executable, "-m", "entrypoints", "up"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    assert up.returncode == 1, up.stdout + up.stderr
    assert "worker exited with 1" in up.stderr, up.stderr
    assert f"cannot serve worker metrics on 127.0.0.1:{ports['metrics']}" in up.stderr
    del ports["metrics"]
    for name, port in ports.items():
        assert not port_open("127.0.0.1", port), f"{name} still listens on {port}"
