"""The API refuses bad requests before touching Temporal, with a useful `detail`.

The app runs for real (lifespan, middleware, routing) through FastAPI's TestClient,
pointed at a Temporal address where nothing listens: a request that got as far as
Temporal would answer 503, so every 4xx here was decided by the API itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.deps import USER_HEADER
from api.main import create_app
from api.middleware import MAX_BODY_BYTES
from api.schemas import TaskCreate
from switchboard import repo_refs
from switchboard.models import MAX_GOAL_CHARS, TaskRequest
from switchboard.settings import Settings
from testkit import make_repo

NOWHERE = "127.0.0.1:1"


@pytest.fixture(scope="module")
def api() -> Iterator[TestClient]:
    settings = Settings(temporal_address=NOWHERE, _env_file=None)
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as client:
        yield client


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("validation") / "repo")


def _detail(response: object) -> str:
    body = response.json()  # type: ignore[attr-defined]
    assert isinstance(body["detail"], str), body
    return body["detail"]


def test_empty_goal_is_refused(api: TestClient, repo: Path) -> None:
    response = api.post("/v1/tasks", json={"goal": "", "repo": str(repo)})
    assert response.status_code == 422
    assert "body.goal" in _detail(response)
    assert response.json()["errors"][0]["loc"] == ["body", "goal"]


def test_blank_goal_is_refused(api: TestClient, repo: Path) -> None:
    response = api.post("/v1/tasks", json={"goal": "   \n", "repo": str(repo)})
    assert response.status_code == 422
    assert "goal must not be blank" in _detail(response)


def test_oversized_goal_is_refused(api: TestClient, repo: Path) -> None:
    response = api.post("/v1/tasks", json={"goal": "x" * (MAX_GOAL_CHARS + 1), "repo": str(repo)})
    assert response.status_code == 422
    assert f"at most {MAX_GOAL_CHARS}" in _detail(response)


def test_unknown_role_names_the_valid_ones(api: TestClient, repo: Path) -> None:
    body = {"goal": "g", "repo": str(repo), "subtasks": [{"title": "t", "role": "admin"}]}
    response = api.post("/v1/tasks", json=body)
    assert response.status_code == 422
    detail = _detail(response)
    assert "body.subtasks.0.role" in detail
    assert "'explorer', 'worker' or 'reviewer'" in detail


def test_malformed_json_is_refused(api: TestClient) -> None:
    response = api.post(
        "/v1/tasks", content=b'{"goal": "g", "repo":', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "not valid JSON" in _detail(response)


def test_owner_cannot_be_set_in_the_body(api: TestClient, repo: Path) -> None:
    response = api.post("/v1/tasks", json={"goal": "g", "repo": str(repo), "owner": "mallory"})
    assert response.status_code == 422
    assert "body.owner: Extra inputs are not permitted" in _detail(response)


def test_missing_local_repo_is_a_400_saying_how_to_fix_it(api: TestClient, tmp_path: Path) -> None:
    response = api.post("/v1/tasks", json={"goal": "g", "repo": str(tmp_path / "nope")})
    assert response.status_code == 400
    detail = _detail(response)
    assert "does not exist" in detail and "git URL" in detail


def test_directory_that_is_not_a_repo_is_a_400(api: TestClient, tmp_path: Path) -> None:
    response = api.post("/v1/tasks", json={"goal": "g", "repo": str(tmp_path)})
    assert response.status_code == 400
    assert "is not a git repository" in _detail(response)


def test_unsupported_url_scheme_is_a_400(api: TestClient) -> None:
    response = api.post("/v1/tasks", json={"goal": "g", "repo": "ftp://example.com/r.git"})
    assert response.status_code == 400
    assert "unsupported repository URL scheme 'ftp'" in _detail(response)


def test_body_over_the_limit_is_413_chunked_or_not(api: TestClient) -> None:
    payload = json.dumps({"goal": "x" * (MAX_BODY_BYTES + 10), "repo": "/r"}).encode()
    sized = api.post("/v1/tasks", content=payload, headers={"content-type": "application/json"})
    assert sized.status_code == 413
    assert "request body over" in _detail(sized)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(payload), 64 * 1024):
            yield payload[start : start + 64 * 1024]

    chunked = api.post("/v1/tasks", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413


def test_bad_user_header_is_refused(api: TestClient, repo: Path) -> None:
    response = api.get("/v1/tasks", headers={USER_HEADER: "no spaces allowed"})
    assert response.status_code == 422
    assert "x-switchboard-user" in _detail(response).lower()


def test_blank_feedback_and_guidance_are_refused(api: TestClient) -> None:
    changes = api.post("/v1/tasks/task-x/request-changes", json={"feedback": "  "})
    assert changes.status_code == 422
    assert "feedback must not be blank" in _detail(changes)
    steer = api.post("/v1/tasks/task-x/steer", json={})
    assert steer.status_code == 422
    assert "body.guidance: Field required" in _detail(steer)


def test_last_event_id_must_be_an_offset(api: TestClient) -> None:
    response = api.get("/v1/tasks/task-x/events", headers={"Last-Event-ID": "abc"})
    assert response.status_code == 400
    assert "Last-Event-ID must be an event offset" in _detail(response)
    negative = api.get("/v1/tasks/task-x/events?from=-1")
    assert negative.status_code == 422


def test_temporal_down_is_503_with_how_to_start_it(api: TestClient, repo: Path) -> None:
    response = api.post("/v1/tasks", json={"goal": "g", "repo": str(repo)})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert f"Temporal is not reachable at {NOWHERE}" in _detail(response)
    assert api.get("/readyz").status_code == 503


def test_health_metrics_and_docs(api: TestClient) -> None:
    assert api.get("/healthz").json()["status"] == "ok"
    api.get("/v1/tasks/task-x/events", headers={"Last-Event-ID": "zzz"})
    metrics = api.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert (
        'switchboard_api_requests_total{method="GET",route="/v1/tasks/{task_id}/events",'
        'status="400"}' in metrics.text
    )
    paths = api.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/tasks",
        "/v1/tasks/{task_id}",
        "/v1/tasks/{task_id}/events",
        "/v1/tasks/{task_id}/diff",
        "/v1/tasks/{task_id}/approve",
        "/v1/tasks/{task_id}/request-changes",
        "/v1/tasks/{task_id}/reject",
        "/v1/tasks/{task_id}/cancel",
        "/v1/tasks/{task_id}/steer",
    ):
        assert path in paths, path
    assert api.get("/docs").status_code == 200


def test_task_create_mirrors_task_request_without_owner() -> None:
    # The owner comes from the caller, the credential reference from the server's
    # store (issue #10) and the policy from the verified submitter (#11): a client can
    # set none of them.
    assert set(TaskCreate.model_fields) == set(TaskRequest.model_fields) - {
        "owner",
        "credential_ref",
        "policy",
    }
    for name, field in TaskCreate.model_fields.items():
        assert field.metadata == TaskRequest.model_fields[name].metadata, name
    request = TaskCreate(goal="g", repo="/r", request_id="abc").to_request(owner="alice")
    assert request.owner == "alice" and request.request_id == "abc"


@pytest.mark.parametrize(
    ("repo", "remote"),
    [
        ("https://github.com/a/b.git", True),
        ("git@github.com:a/b.git", True),
        ("ssh://git@host:22/a/b", True),
        ("file:///srv/repo", True),
        ("/home/me/repo", False),
        ("./repo", False),
        ("weird:name", False),
    ],
)
def test_is_remote(repo: str, remote: bool) -> None:
    assert repo_refs.is_remote(repo) is remote


def test_repo_subdirectory_points_at_the_top_level(repo: Path) -> None:
    sub = repo / "src"
    with pytest.raises(ValueError, match="not its top level"):
        repo_refs.validate_repo_reference(str(sub))
    repo_refs.validate_repo_reference(str(repo))
    assert repo_refs.normalise_repo(str(sub / "..")) == str(repo.resolve())


def test_a_405_allows_every_method_of_the_path(api: TestClient) -> None:
    # /v1/sessions is two routes (GET, POST): Starlette alone named only the first.
    assert api.request("OPTIONS", "/v1/sessions").headers["allow"] == "GET, POST"
    assert api.request("PUT", "/v1/sessions/session-x").headers["allow"] == "DELETE, GET"
    assert api.request("TRACE", "/v1/tasks/task-x/approve").headers["allow"] == "POST"


def test_the_document_declares_the_422_the_api_sends(api: TestClient) -> None:
    document = api.get("/openapi.json").json()
    declared = document["components"]["schemas"]["HTTPValidationError"]
    assert declared["properties"]["detail"]["type"] == "string"
    assert set(declared["required"]) == {"detail", "errors"}
    sent = api.post("/v1/tasks", json={"goal": ""}).json()
    assert set(sent) == {"detail", "errors"} and isinstance(sent["detail"], str)
    submit = document["paths"]["/v1/tasks"]["post"]["responses"]
    assert {"400", "413", "422", "502", "503"} <= set(submit)
