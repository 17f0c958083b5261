"""A token in a task's repository URL is used, and shows up nowhere else (issue #10).

A real `git http-backend` behind Basic auth on 127.0.0.1 plays the user's https
remote. The task starts through `TaskService.submit` (what the API, the CLI and the
chat gateway call) with `http://alice:<token>@.../repo.git`; the scripted worker
looks for credentials from inside its sandbox. The fetch and the push on approval
must authenticate, and the token must appear in no history event, search attribute,
status, event, log record, file the task wrote or anything the sandbox printed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError

from chat_gateway import Gateway
from switchboard.conversation import SessionState
from switchboard.credentials import CredentialStore
from switchboard.identity import local_identity
from switchboard.model_server import ModelServerHandle, parse_scenario
from switchboard.models import (
    ApproveInput,
    EventsPage,
    EventsRequest,
    Phase,
    Role,
    SubtaskSpec,
    TaskRequest,
)
from switchboard.service import TaskService
from switchboard.settings import Settings
from switchboard.wire import Queries, SearchAttributes, Updates
from testkit import git, wait_for, wait_for_phase

pytestmark = pytest.mark.integration

TOKEN = "tok-9d41c7e2b05f"


class _GitHttp(BaseHTTPRequestHandler):
    """`git http-backend` as CGI, for one user with one password."""

    root: Path
    seen: list[str]

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.end_headers()
            return
        user = base64.b64decode(auth.removeprefix("Basic ")).decode()
        self.seen.append(user)
        if user != f"alice:{TOKEN}":
            self.send_response(403)
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "alice",
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        done = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        )
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        headers = [line.split(":", 1) for line in head.decode().split("\r\n") if ":" in line]
        status = next((v.strip() for k, v in headers if k.lower() == "status"), "200 OK")
        self.send_response(int(status.split()[0]))
        for key, value in headers:
            if key.lower() != "status":
                self.send_header(key, value.strip())
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def remote(tmp_path: Path, repo: Path) -> Iterator[tuple[str, Path, type[_GitHttp]]]:
    served = tmp_path / "served"
    served.mkdir()
    git(served, "clone", "-q", "--bare", str(repo), "repo.git")
    git(served / "repo.git", "config", "http.receivepack", "true")
    handler = type("GitHttp", (_GitHttp,), {"root": served, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}/repo.git", served / "repo.git", handler
    server.shutdown()
    server.server_close()


def _files_with(root: Path, needle: str, skip: Path) -> list[str]:
    """Files under `root` holding `needle`; walks past what the task's cleanup removes
    meanwhile (os.walk ignores a directory that vanished)."""
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_relative_to(skip) or path.is_symlink():
                continue
            try:
                if needle.encode() in path.read_bytes():
                    found.append(str(path))
            except (FileNotFoundError, IsADirectoryError):
                continue
    return found


async def test_a_token_in_the_url_is_used_and_stored_nowhere_else(
    client: Client,
    settings: Settings,
    worker: None,
    model: ModelServerHandle,
    remote: tuple[str, Path, type[_GitHttp]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    where, served, handler = remote
    probe = (
        "git remote -v; git config -l; cat .git; "
        'cat "$(git rev-parse --git-common-dir)/config"; env; '
        'common="$(git rev-parse --git-common-dir)"; '
        # The token is spelt in two halves, so the command itself (in history) does not hold it.
        f't={TOKEN[:6]}; t="${{t}}{TOKEN[6:]}"; '
        'grep -rl "$t" . /tmp /etc "$common" "$(cat "$common/objects/info/alternates")" '
        "2>/dev/null | sed 's/^/FOUN''D-/' | head -5; echo probed"
    )
    model.set_scenario(
        parse_scenario(
            {
                "roles": {
                    "worker": [
                        {"tool_calls": [{"name": "run", "arguments": {"command": probe}}]},
                        {
                            "tool_calls": [
                                {
                                    "name": "write_file",
                                    "arguments": {"path": "new.txt", "content": "x\n"},
                                }
                            ]
                        },
                        {"tool_calls": [{"name": "finish", "arguments": {"summary": "done"}}]},
                    ]
                }
            }
        )
    )
    caplog.set_level(logging.DEBUG)
    service = TaskService(client, settings)
    submitted = await service.submit(
        TaskRequest(
            goal="Add new.txt",
            repo=f"http://alice:{TOKEN}@{where}",
            subtasks=[SubtaskSpec(title="Add it", role=Role.WORKER)],
            review=False,
            push=True,
        )
    )
    handle = client.get_workflow_handle(submitted.task_id)
    status = await wait_for_phase(handle, Phase.AWAITING_APPROVAL, timeout=240)
    assert status.repo == f"http://{where}"
    await handle.execute_update(Updates.APPROVE, ApproveInput(by="alice"))
    await wait_for_phase(handle, Phase.COMPLETED, timeout=120)

    # Used: the fetch and the push authenticated, and the branch arrived.
    assert handler.seen and set(handler.seen) == {f"alice:{TOKEN}"}
    assert git(served, "rev-parse", "--verify", f"refs/heads/switchboard/{handle.id}")
    # ...and nowhere else.
    parent = await handle.fetch_history()
    children = [
        e.start_child_workflow_execution_initiated_event_attributes.workflow_id
        for e in parent.events
        if e.HasField("start_child_workflow_execution_initiated_event_attributes")
    ]
    assert children  # the subagent's own history holds its tool calls' output
    histories = [parent] + [await client.get_workflow_handle(c).fetch_history() for c in children]
    # Raw events: payloads are plain JSON bytes there (base64 in the JSON form).
    history = b"".join(e.SerializeToString() for h in histories for e in h.events).decode(
        errors="replace"
    )
    events: EventsPage = await handle.query(
        Queries.EVENTS, EventsRequest(from_offset=0, limit=2000), result_type=EventsPage
    )
    described = await handle.describe()
    attributes = str(described.typed_search_attributes)
    assert described.typed_search_attributes.get(SearchAttributes.REPO) == f"http://{where}"
    assert "probed" in history  # what the sandbox printed is in its history, and searched
    assert "FOUND-" not in history  # (the command spells it FOUN''D-)
    final = await service.status(handle.id)
    for surface, text in {
        "histories (with what the sandbox printed)": history,
        "search attributes": attributes,
        "status": final.model_dump_json(),
        "events": events.model_dump_json(),
        "logs": caplog.text,
    }.items():
        assert TOKEN not in text, f"the token is in the task's {surface}"
    assert _files_with(settings.data_dir, TOKEN, skip=settings.credentials_dir) == []
    # The task ended: its cleanup released its credentials, and no other task holds them.
    await handle.result()
    assert _files_with(settings.credentials_dir, TOKEN, skip=settings.data_dir / "none") == []


async def test_a_token_in_a_session_or_a_chat_message_is_stored_like_the_api_path(
    client: Client,
    settings: Settings,
    worker: None,
    model: ModelServerHandle,
    remote: tuple[str, Path, type[_GitHttp]],
) -> None:
    """A session's default repository and a URL typed into chat keep their credentials in
    the store, for that user's tasks of that URL; the session holds the bare URL."""
    where, _served, handler = remote
    gateway = Gateway(client, settings)
    try:
        info = await gateway.create_session("alice", repo=f"http://alice:{TOKEN}@{where}")
        assert info.repo == f"http://{where}"
        typed = f"also look at http://alice:{TOKEN}@{where}, it is the same."
        await gateway.post(info.session_id, "alice", typed)
        for _ in range(300):  # the turn ends before the next message
            page = await gateway.store.entries(info.session_id, 0)
            if any(e.ends_turn for e in page.entries):
                break
            await asyncio.sleep(0.2)
        await gateway.post(info.session_id, "alice", "delegate: add a slugify helper")
        state = await wait_for_state(gateway, info.session_id, lambda s: bool(s.tasks))
        assert state.repo == f"http://{where}"
        page = await gateway.store.entries(info.session_id, 0)
        said = [e.content for e in page.entries if e.role == "user"]
        assert said[0] == f"also look at http://{where}, it is the same."
        task = client.get_workflow_handle(state.tasks[0].task_id)
        # The task started from the bare URL fetched with the remembered credentials.
        await wait_for(task, lambda s: s.phase is not Phase.PREPARING, what="the fetch")
        assert set(handler.seen) == {f"alice:{TOKEN}"}
        await gateway.service.cancel(task.id, caller=local_identity("alice"))
        with pytest.raises(WorkflowFailureError):  # ended as cancelled, cleaned up
            await task.result()
        session = await client.get_workflow_handle(info.session_id).fetch_history()
        history = b"".join(e.SerializeToString() for e in session.events).decode(errors="replace")
        assert "also look at" in history and TOKEN not in history
        assert TOKEN not in (await task.fetch_history()).to_json()
        # The session's user still holds them (a next task); no file outside the store.
        assert _files_with(settings.credentials_dir, TOKEN, skip=settings.data_dir / "none")
        assert _files_with(settings.data_dir, TOKEN, skip=settings.credentials_dir) == []
        # Another user naming the bare URL gets nothing of alice's.
        store = CredentialStore(settings.credentials_dir)
        assert store.for_owner("mallory", f"http://{where}") is None
        assert store.for_owner("alice", f"http://{where}") is not None
    finally:
        await gateway.aclose()


async def wait_for_state(
    gateway: Gateway, session_id: str, ready: Callable[[SessionState], bool]
) -> SessionState:
    for _ in range(300):
        state = await gateway.state(session_id, "alice")
        if ready(state):
            return state
        await asyncio.sleep(0.2)
    raise AssertionError(f"the session never got there: {state}")
