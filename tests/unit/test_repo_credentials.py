"""Credentials in a repository URL reach git only at fetch time, never a file or a message.

A small HTTP server on 127.0.0.1 plays an https remote that wants Basic auth: it
answers 401 until credentials come, records them, and looks at every mirror config
on disk while git is talking to it (the moment the mirror exists).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities import _git
from switchboard.contracts import PrepareRepoInput
from switchboard.credentials import CredentialStore
from switchboard.repo_refs import redact_repo, split_credentials
from switchboard.settings import Settings
from switchboard.wire import Errors

SECRET = "s3cret-token"


class _Remote(BaseHTTPRequestHandler):
    seen_auth: list[str]
    configs_with_secret: list[str]
    mirrors: Path

    def do_GET(self) -> None:
        for config in self.mirrors.glob("**/config"):
            if SECRET in config.read_text(errors="replace"):
                self.configs_with_secret.append(str(config))
        auth = self.headers.get("Authorization")
        if auth is None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.end_headers()
            return
        self.seen_auth.append(base64.b64decode(auth.removeprefix("Basic ")).decode())
        self.send_response(404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[tuple[int, type[_Remote]]]:
    handler = type(
        "Remote",
        (_Remote,),
        {"seen_auth": [], "configs_with_secret": [], "mirrors": tmp_path / "data" / "mirrors"},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], handler
    server.shutdown()
    server.server_close()


def test_split_and_redact() -> None:
    assert split_credentials("https://u:t%40k@Example.org:8443/a.git") == (
        "https://example.org:8443/a.git",
        "u",
        "t@k",
    )
    assert redact_repo("https://tok@h.example/x") == "https://h.example/x"
    assert redact_repo("ssh://git@h.example/x") == "ssh://git@h.example/x"
    assert redact_repo("/srv/repo") == "/srv/repo"


def test_credentials_go_to_git_only_in_its_environment(
    tmp_path: Path, remote: tuple[int, type[_Remote]]
) -> None:
    port, handler = remote
    settings = Settings(data_dir=tmp_path / "data", host_id="cred-host", _env_file=None)
    url = f"http://alice:{SECRET}@127.0.0.1:{port}/team/repo.git"

    with pytest.raises(ApplicationError) as failed:
        _git.prepare_mirror(settings, PrepareRepoInput(repo=url))

    assert handler.seen_auth == [f"alice:{SECRET}"], "git did not get the credentials"
    assert handler.configs_with_secret == [], "the credentials were written to a mirror config"
    assert failed.value.type == Errors.REPO_FETCH_FAILED
    assert SECRET not in str(failed.value)
    assert f"http://127.0.0.1:{port}/team/repo.git" in str(failed.value)
    leftovers = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert not [p for p in leftovers if SECRET in p.read_text(errors="replace")]


def test_the_store_keeps_credentials_by_reference_in_private_files(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "creds")
    bare, ref = store.put(f"https://alice:{SECRET}@git.example/team/repo.git")
    assert bare == "https://git.example/team/repo.git"
    assert ref is not None and SECRET not in ref
    assert store.put(f"https://alice:{SECRET}@git.example/team/repo.git") == (bare, ref)
    assert store.put("https://git.example/team/repo.git") == (bare, None)
    assert store.get(ref, bare) == ("alice", SECRET)
    assert store.get(ref, "https://elsewhere.example/x.git") is None  # bound to its URL
    assert store.get("../.key", bare) is None
    assert (tmp_path / "creds").stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "creds").iterdir()} == {0o600}


def test_a_reference_is_resolved_on_the_host_at_fetch_time(
    tmp_path: Path, remote: tuple[int, type[_Remote]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, handler = remote
    settings = Settings(data_dir=tmp_path / "data", host_id="cred-host", _env_file=None)
    bare, ref = CredentialStore(settings.credentials_dir).put(
        f"http://alice:{SECRET}@127.0.0.1:{port}/team/repo.git"
    )
    with pytest.raises(ApplicationError) as failed:
        _git.prepare_mirror(settings, PrepareRepoInput(repo=bare, credential_ref=ref))
    assert handler.seen_auth == [f"alice:{SECRET}"]
    assert failed.value.type == Errors.REPO_FETCH_FAILED and SECRET not in str(failed.value)

    # Another host's worker has no such store: its environment gives the credentials...
    elsewhere = Settings(data_dir=tmp_path / "other", host_id="other-host", _env_file=None)
    with pytest.raises(ApplicationError) as missing:
        _git.prepare_mirror(elsewhere, PrepareRepoInput(repo=bare, credential_ref=ref))
    assert missing.value.type == Errors.INVALID_INPUT
    assert "SWITCHBOARD_REPO_CREDENTIALS_127_0_0_1" in str(missing.value)
    assert len(handler.seen_auth) == 1  # ...and without them nothing was fetched
    monkeypatch.setenv("SWITCHBOARD_REPO_CREDENTIALS_127_0_0_1", "bob:env-token")
    with pytest.raises(ApplicationError):
        _git.prepare_mirror(elsewhere, PrepareRepoInput(repo=bare, credential_ref=ref))
    assert handler.seen_auth[-1] == "bob:env-token"
