"""The CLI never goes around the checks: `switchboard task ...` acts through the API
with the user's token (`--token`, `SWITCHBOARD_TOKEN`, `switchboard login`), so the
API's tenant and role rules hold for it. The real identity provider (tests/idp), the
API under uvicorn with `auth_mode=tokens,oidc`, the real workflows and worker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner, Result

from entrypoints.cli import EXIT_FAILED, EXIT_USAGE, app
from switchboard import wire
from switchboard.models import Phase
from testkit.idp import IdentityProvider
from tests.integration.test_chat_roles import accepted_updates
from tests.integration.test_identity import auth_settings, base_url, idp

pytestmark = pytest.mark.integration

__all__ = ["auth_settings", "base_url", "idp"]  # fixtures


async def cli(env: dict[str, str | None], *args: str) -> Result:
    runner = CliRunner()
    return await asyncio.to_thread(lambda: runner.invoke(app, list(args), env=env))


async def test_the_cli_acts_as_the_token_says(
    base_url: str,
    idp: IdentityProvider,
    repo: Path,
    tmp_path: Path,
    temporal_env: WorkflowEnvironment,
) -> None:
    env: dict[str, str | None] = {
        "SWITCHBOARD_API_URL": base_url,
        "SWITCHBOARD_TOKEN": None,
        "SWITCHBOARD_USER": "acme-abe",  # a local-mode name: a verifying API ignores it
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "COLUMNS": "200",
    }
    ann = idp.token("acme-ann")

    anonymous = await cli(env, "task", "list")
    assert anonymous.exit_code == EXIT_USAGE, anonymous.output
    assert "not signed in" in anonymous.stderr and "switchboard login" in anonymous.stderr
    expired = idp.token("acme-ann", "https://switchboard.test/short")
    await asyncio.sleep(2.1)
    late = await cli(env, "--token", expired, "task", "list")
    assert late.exit_code == EXIT_USAGE and "expired" in late.stderr.lower()
    assert "switchboard login" in late.stderr

    submitted = await cli(
        env, "--token", ann, "task", "submit", "--repo", str(repo), "--goal", "Add a helper",
        "--subtask", "Helper", "--no-review",
    )  # fmt: skip
    assert submitted.exit_code == 0, submitted.output
    task_id = submitted.stdout.strip()
    async with asyncio.timeout(120):
        while True:
            shown = await cli(env, "--token", ann, "task", "status", task_id, "--json")
            assert shown.exit_code == 0, shown.output
            if f'"phase":"{Phase.AWAITING_APPROVAL.value}"' in shown.stdout.replace(" ", ""):
                break
            await asyncio.sleep(0.3)
    assert '"owner":"acme/acme-ann"' in shown.stdout.replace(" ", "")

    # The requester may not approve (the API refuses, naming the role; nothing reaches
    # the workflow); another tenant does not see the task at all.
    refused = await cli(env, "--token", ann, "task", "approve", task_id)
    assert refused.exit_code == EXIT_FAILED and "'approver'" in refused.stderr
    assert wire.Updates.APPROVE not in await accepted_updates(temporal_env, task_id)
    gus = {**env, "SWITCHBOARD_TOKEN": idp.token("globex-gus")}
    for args in (["status", task_id], ["approve", task_id], ["cancel", task_id]):
        hidden = await cli(gus, "task", *args)
        assert hidden.exit_code == EXIT_FAILED and f"no task '{task_id}'" in hidden.stderr, args
    listed = await cli(gus, "task", "list")
    assert listed.exit_code == 0 and task_id not in listed.stdout

    # The approver, signed in once with `switchboard login`, approves as themself.
    login = await cli(env, "login", "--token", idp.token("acme-abe"))
    assert login.exit_code == 0, login.output
    approved = await cli(env, "task", "approve", task_id, "--comment", "ok")
    assert approved.exit_code == 0, approved.output
    assert approved.stdout.startswith("approved by acme/acme-abe")
    watched = await cli(env, "task", "watch", task_id)
    assert watched.exit_code == 0 and watched.stdout.splitlines()[-1].split()[2] == "completed"
