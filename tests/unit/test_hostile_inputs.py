"""Hostile task inputs get an immediate 4xx, never a 500 or a task that retries.

Local repository paths are held to the configured roots: a remote caller (or a path
outside the roots, or one the server cannot read) gets one message whatever is on
disk, so the answers cannot be used to map the server's filesystem. As in
test_api_validation, Temporal is unreachable: a request that got past validation
would answer 503.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from switchboard import repo_refs
from switchboard.api_tokens import TokenStore
from switchboard.identity import Role
from switchboard.settings import Settings
from testkit import make_repo

NOWHERE = "127.0.0.1:1"
PROBES = [
    "/etc/shadow",
    "/root/.ssh",
    "/etc",
    "~",
    "~root/.ssh",
    "/proc/self/cwd",
    "/proc/1/root",
    "/proc/1/root/etc",
    "~nosuchuser/x",
    "/tmp/" + "a" * 256,
    "/" + "/".join(["b" * 255] * 6),
]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("roots")


@pytest.fixture(scope="module")
def repo(root: Path) -> Path:
    return make_repo(root / "repo")


def _client(settings: Settings, client_host: str) -> TestClient:
    return TestClient(create_app(settings), client=(client_host, 50000))


@pytest.fixture(scope="module")
def local_api(root: Path) -> Iterator[TestClient]:
    settings = Settings(temporal_address=NOWHERE, repo_roots=[root], _env_file=None)
    with _client(settings, "127.0.0.1") as client:
        yield client


@pytest.fixture(scope="module")
def remote_api(root: Path) -> Iterator[TestClient]:
    # Roots configured for local callers; a client from another address gets none.
    settings = Settings(temporal_address=NOWHERE, repo_roots=[root], _env_file=None)
    with _client(settings, "203.0.113.7") as client:
        yield client


def _submit(api: TestClient, repo: str, **extra: object) -> tuple[int, str]:
    response = api.post("/v1/tasks", json={"goal": "g", "repo": repo, **extra})
    detail = response.json()["detail"]
    assert isinstance(detail, str), response.json()
    return response.status_code, detail


def _uniform(detail: str, probe: str) -> str:
    # The message quotes the caller's own input back; everything else must be equal.
    return detail.replace(repr(probe), "<repo>")


@pytest.mark.parametrize("api_name", ["local_api", "remote_api"])
def test_probes_outside_the_roots_all_get_one_message(
    api_name: str, request: pytest.FixtureRequest
) -> None:
    api: TestClient = request.getfixturevalue(api_name)
    answers = {probe: _submit(api, probe) for probe in PROBES}
    assert {status for status, _ in answers.values()} == {400}, answers
    messages = {_uniform(detail, probe) for probe, (_, detail) in answers.items()}
    assert len(messages) == 1, messages
    assert "is not a git repository this server may use" in messages.pop()


def test_remote_caller_gets_no_local_paths_even_a_real_repo(
    remote_api: TestClient, repo: Path
) -> None:
    status, detail = _submit(remote_api, str(repo))
    assert status == 400
    assert "accepts no local paths from you: use a git URL" in detail
    assert str(repo.parent) not in detail.replace(str(repo), "")


def test_remote_caller_may_give_a_url(remote_api: TestClient) -> None:
    # Past validation: the unreachable Temporal answers.
    status, _ = _submit(remote_api, "https://example.invalid/org/repo.git")
    assert status == 503


def test_local_caller_inside_the_roots_reaches_temporal(local_api: TestClient, repo: Path) -> None:
    status, _ = _submit(local_api, str(repo))
    assert status == 503


def test_symlink_out_of_the_roots_is_refused(local_api: TestClient, root: Path) -> None:
    link = root / "escape"
    link.symlink_to("/etc")
    status, detail = _submit(local_api, str(link))
    assert status == 400 and "may use" in detail


def test_api_bound_beyond_loopback_treats_every_caller_as_remote(
    root: Path, repo: Path, tmp_path: Path
) -> None:
    settings = Settings(
        temporal_address=NOWHERE,
        api_host="0.0.0.0",
        repo_roots=[root],
        auth_mode="tokens",
        data_dir=tmp_path,
        _env_file=None,
    )
    token, _ = TokenStore(settings.api_tokens_file).create(
        subject="ann", tenant="acme", roles=[Role.REQUESTER]
    )
    with _client(settings, "127.0.0.1") as api:
        api.headers["Authorization"] = f"Bearer {token}"
        status, detail = _submit(api, str(repo))
    assert status == 400 and "accepts no local paths from you" in detail


@pytest.mark.parametrize(
    "base_ref", ["main\x00", "main\nx", "-delete", "a b", "refs/heads/x:y", "", "\x1b[31m"]
)
def test_bad_base_ref_is_refused_at_once(local_api: TestClient, repo: Path, base_ref: str) -> None:
    response = local_api.post(
        "/v1/tasks", json={"goal": "g", "repo": str(repo), "base_ref": base_ref}
    )
    assert response.status_code == 422
    assert "body.base_ref" in response.json()["detail"]


def test_good_base_refs_pass(local_api: TestClient, repo: Path) -> None:
    for base_ref in ("main", "v1.2.3", "feature/x-y", "HEAD~2", "abc123^{commit}"):
        status, _ = _submit(local_api, str(repo), base_ref=base_ref)
        assert status == 503, base_ref


def test_control_characters_in_repo_and_request_id_are_refused(
    local_api: TestClient, repo: Path
) -> None:
    nul = local_api.post("/v1/tasks", json={"goal": "g", "repo": f"{repo}\x00"})
    assert nul.status_code == 422 and "body.repo" in nul.json()["detail"]
    rid = local_api.post("/v1/tasks", json={"goal": "g", "repo": str(repo), "request_id": "a\nb"})
    assert rid.status_code == 422 and "body.request_id" in rid.json()["detail"]


def test_validation_never_raises_anything_but_value_error() -> None:
    for probe in [*PROBES, "\x00", "/proc/1/root/.git"]:
        with pytest.raises(ValueError):
            repo_refs.validate_repo_reference(probe, roots=[])
        assert isinstance(repo_refs.normalise_repo(probe), str)


def test_default_roots_are_home_and_cwd_locally_and_none_remotely() -> None:
    settings = Settings(repo_roots=None, _env_file=None)
    assert settings.repo_roots_for(remote=False) == [Path.home(), Path.cwd()]
    assert settings.repo_roots_for(remote=True) == []
