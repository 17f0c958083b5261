"""Backend selection: the asked-for backend or a clear refusal, never no sandbox."""

from __future__ import annotations

import pytest

from activities.sandbox import BwrapSandbox, SandboxUnavailable, select_backend
from switchboard.settings import Settings
from tests.sandbox.conftest import make_backend


def docker_answers(settings: Settings) -> bool:
    try:
        make_backend("docker", settings)
    except SandboxUnavailable:
        return False
    return True


def test_bwrap_is_selected_and_describes_its_guarantees(settings: Settings) -> None:
    sandbox = select_backend(settings.model_copy(update={"sandbox": "bwrap"}))
    assert sandbox.name == "bwrap"
    guarantees = sandbox.describe()["guarantees"]
    assert guarantees["network"].startswith("none")
    assert {"memory_limit", "pids_limit", "time_limit", "output_limit"} <= set(guarantees)


def test_auto_prefers_docker_when_it_answers(settings: Settings) -> None:
    sandbox = select_backend(settings.model_copy(update={"sandbox": "auto"}))
    assert sandbox.name == ("docker" if docker_answers(settings) else "bwrap")


def test_auto_falls_back_to_bwrap_without_a_daemon(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert select_backend(settings.model_copy(update={"sandbox": "auto"})).name == "bwrap"


def test_docker_without_a_daemon_is_refused(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(SandboxUnavailable, match="no Docker daemon answers"):
        select_backend(settings.model_copy(update={"sandbox": "docker"}))


def test_docker_without_the_image_says_how_to_build_it(settings: Settings) -> None:
    if not docker_answers(settings):
        pytest.skip("no Docker daemon with the sandbox image here")
    missing = settings.model_copy(update={"sandbox": "docker", "sandbox_image": "sb-missing:0"})
    with pytest.raises(SandboxUnavailable, match=r"build-image\.sh"):
        select_backend(missing)


def test_a_broken_bwrap_is_refused(settings: Settings) -> None:
    with pytest.raises(SandboxUnavailable, match="smoke run failed"):
        BwrapSandbox(settings, bwrap="/nonexistent/bwrap").check()
