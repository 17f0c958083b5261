"""`switchboard up` as a user runs it: every component a real process; REST, SSE and the
CLI against it; Ctrl-C stops all of it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from entrypoints.devserver import port_open
from testkit import free_port, git, make_repo

pytestmark = pytest.mark.e2e


def test_up_serves_rest_sse_and_cli_then_stops_cleanly(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("temporal", "ui", "model", "api", "metrics")}
    env = _up_env(tmp_path, ports)
    repo = make_repo(tmp_path / "repo")
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "entrypoints", "up"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # As a background job of a non-interactive shell (nohup, `cmd &`, many CI
        # runners) starts it: SIGINT inherited as ignored. Ctrl-C must still stop it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    base = f"http://127.0.0.1:{ports['api']}"
    try:
        _wait_healthy(base, up, tmp_path / "up.log")

        created = httpx.post(
            f"{base}/v1/tasks",
            json={
                "goal": "Add two helpers",
                "repo": str(repo),
                "subtasks": [{"title": "One"}, {"title": "Two"}],
            },
            timeout=30,
        )
        assert created.status_code == 201, created.text
        task_id = created.json()["task_id"]

        # Follow the SSE stream until the approval gate.
        seen = _event_kinds_until_approval(base, task_id)
        assert seen[0] == "phase" and "plan" in seen and "subagent_step" in seen

        # Approve through the CLI (through the API, as the local user).
        approved = subprocess.run(
            [sys.executable, "-m", "entrypoints", "task", "approve", task_id, "--comment", "ok"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert approved.returncode == 0, approved.stderr
        status = _status_once_completed(base, task_id, timeout=60)
        assert status["phase"] == "completed", status
        scraped = httpx.get(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=10).text
        assert re.search(r'^switchboard_tasks_total\{[^}]*outcome="completed"', scraped, re.M)
        files = git(repo, "ls-tree", "-r", "--name-only", f"switchboard/{task_id}")
        assert "src/feature_1.py" in files and "src/feature_2.py" in files
    finally:
        os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            # Say where the stop hung, then take down what `up` started in their own
            # sessions (they would outlive it; see ports below).
            tree = subprocess.run(["ps", "-eo", "pid,ppid,etime,args"], capture_output=True).stdout
            os.killpg(up.pid, signal.SIGKILL)
            for port in ports.values() if shutil.which("fuser") else ():
                subprocess.run(["fuser", "-k", f"{port}/tcp"], capture_output=True)
            log.close()
            tail = (tmp_path / "up.log").read_text(errors="replace")[-4000:]
            hung = f"up did not stop in 60 s; its log:\n{tail}\n{tree.decode()}"
            raise AssertionError(hung) from None
        log.close()
    for name, port in ports.items():
        assert not port_open("127.0.0.1", port), f"{name} still listens on {port} after Ctrl-C"


def test_up_killed_outright_leaves_no_component_running(tmp_path: Path) -> None:
    """SIGKILL gives `up` no chance to stop its children; each was started tied to it
    (a parent-death signal), so none of them keeps its port or its database."""
    ports = {name: free_port() for name in ("temporal", "ui", "model", "api", "metrics")}
    with (tmp_path / "up.log").open("wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "entrypoints", "up"],
            env=_up_env(tmp_path, ports),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_healthy(f"http://127.0.0.1:{ports['api']}", up, tmp_path / "up.log")
            children = _children(up.pid)
            assert len(children) >= 4, children  # dev server, model, worker, API
        finally:
            up.kill()
            up.wait()
        # Generous: on a loaded machine a worker's graceful stop alone can take a while.
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and (_listening(ports) or _alive(children)):
            time.sleep(0.2)
        left, alive = _listening(ports), _alive(children)
        for pid in alive:  # not to leave them to the next test
            os.kill(pid, signal.SIGKILL)
    tail = (tmp_path / "up.log").read_text(errors="replace")[-2000:]
    assert not left and not alive, f"after SIGKILL of up: listening {left}, alive {alive}\n{tail}"


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()]


def _alive(pids: list[int]) -> list[int]:
    """Those of `pids` still running (a zombie, dead but not reaped by init yet, is not)."""
    running = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.append(pid)
    return running


def _listening(ports: dict[str, int]) -> list[str]:
    return [name for name, port in ports.items() if port_open("127.0.0.1", port)]


def _up_env(tmp_path: Path, ports: dict[str, int]) -> dict[str, str]:
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


def _wait_healthy(base: str, up: subprocess.Popen[bytes], log_path: Path) -> None:
    """Until the API answers /healthz; fail with the log if `up` exits or 90 s pass."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert up.poll() is None, log_path.read_text()
        time.sleep(0.2)
    else:
        pytest.fail("the API did not come up: " + log_path.read_text())


def _event_kinds_until_approval(base: str, task_id: str) -> list[str]:
    """Follow the task's SSE stream until the approval gate; the event kinds seen."""
    seen: list[str] = []
    with httpx.stream("GET", f"{base}/v1/tasks/{task_id}/events", timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                seen.append(event["kind"])
                if event["kind"] == "approval_needed":
                    break
    return seen


def _status_once_completed(base: str, task_id: str, timeout: float) -> dict[str, object]:
    """The task's status over REST, polled until completed or `timeout` passes."""
    deadline = time.monotonic() + timeout
    status: dict[str, object] = {}
    while time.monotonic() < deadline:
        status = httpx.get(f"{base}/v1/tasks/{task_id}", timeout=10).json()
        if status["phase"] == "completed":
            break
        time.sleep(0.3)
    return status
