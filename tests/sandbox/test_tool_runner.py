"""The tool runner of the `subagent_step` activity against real sandboxes and git worktrees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.sandbox import Sandbox
from activities.tools import ToolActivities
from switchboard.contracts import SandboxSpec, ToolOutcome
from switchboard.models import Role
from switchboard.settings import Settings
from switchboard.tools import CheckedCall, ToolName
from switchboard.wire import Errors
from tests.sandbox.helpers import Checkout


def call(name: ToolName, **arguments: Any) -> CheckedCall:
    return CheckedCall(call_id=f"c-{name.value}", name=name, arguments=arguments)


async def run(
    tools: ToolActivities, checkout: Checkout, role: Role, *calls: CheckedCall
) -> list[ToolOutcome]:
    outcomes: list[ToolOutcome] = await ActivityEnvironment().run(
        tools.run_calls, checkout.spec(role), checkout.base_commit, list(calls)
    )
    assert [o.call_id for o in outcomes] == [c.call_id for c in calls]
    return outcomes


@pytest.fixture
def tools(settings: Settings, sandbox: Sandbox) -> ToolActivities:
    return ToolActivities(settings, sandbox)


async def test_start_sandbox_names_the_backend(
    tools: ToolActivities, sandbox: Sandbox, checkout: Checkout
) -> None:
    spec = checkout.spec(Role.WORKER)
    info = await ActivityEnvironment().run(tools.start, spec)
    again = await ActivityEnvironment().run(tools.start, spec)
    assert info == again
    assert info.sandbox_id == spec.sandbox_id
    assert info.backend == sandbox.name
    await sandbox.stop(spec.sandbox_id)


async def test_read_list_and_search(tools: ToolActivities, checkout: Checkout) -> None:
    listed, read, found, missing, none = await run(
        tools,
        checkout,
        Role.EXPLORER,
        call(ToolName.LIST_FILES, path="."),
        call(ToolName.READ_FILE, path="src/calc.py"),
        call(ToolName.SEARCH, pattern="return a \\+ b", path="."),
        call(ToolName.READ_FILE, path="src/nope.py"),
        call(ToolName.SEARCH, pattern="no such text anywhere", path="src"),
    )
    assert listed.ok and sorted(listed.output.split()) == ["README.md", "src/calc.py"]
    assert read.ok and read.output == "def add(a, b):\n    return a + b\n"
    assert found.ok and "src/calc.py:2:" in found.output
    assert not missing.ok and "No such file" in missing.output
    assert none.ok and none.output == "no matches"


async def test_worker_writes_patches_runs_and_diffs(
    tools: ToolActivities, checkout: Checkout
) -> None:
    patch = (
        "--- a/src/calc.py\n+++ b/src/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n"
        "-    return a + b\n+    return b + a\n"
    )
    wrote, patched, ran, failed, finished = await run(
        tools,
        checkout,
        Role.WORKER,
        call(ToolName.WRITE_FILE, path="pkg/new.txt", content="hello\n"),
        call(ToolName.APPLY_PATCH, patch=patch),
        call(ToolName.RUN, command="cat pkg/new.txt && git status --short", timeout_seconds=10),
        call(ToolName.RUN, command="echo oops >&2; exit 3", timeout_seconds=10),
        call(ToolName.FINISH, summary="done"),
    )
    assert wrote.ok and wrote.output == "wrote 6 bytes to pkg/new.txt"
    assert (checkout.worktree / "pkg" / "new.txt").read_text() == "hello\n"
    assert patched.ok, patched.output
    assert "return b + a" in (checkout.worktree / "src" / "calc.py").read_text()
    assert ran.ok and "hello" in ran.output and "M src/calc.py" in ran.output
    assert not failed.ok and failed.exit_code == 3 and "oops" in failed.output
    assert finished.ok and finished.output == "finished"

    [diff] = await run(tools, checkout, Role.REVIEWER, call(ToolName.DIFF, path=None))
    assert diff.ok
    assert "+    return b + a" in diff.output
    assert "pkg/new.txt" in diff.output  # untracked files are named


async def test_a_patch_that_does_not_apply_changes_nothing(
    tools: ToolActivities, checkout: Checkout
) -> None:
    before = (checkout.worktree / "src" / "calc.py").read_text()
    bad = (
        "--- a/src/calc.py\n+++ b/src/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n"
        "-    return a * b\n+    return 0\n"
    )
    [outcome] = await run(tools, checkout, Role.WORKER, call(ToolName.APPLY_PATCH, patch=bad))
    assert not outcome.ok
    assert "does not apply" in outcome.output
    assert (checkout.worktree / "src" / "calc.py").read_text() == before
    assert not list(checkout.worktree.rglob("*.rej")) and not list(
        checkout.worktree.rglob("*.orig")
    )


async def test_read_only_roles_cannot_write_even_when_asked(
    tools: ToolActivities, checkout: Checkout
) -> None:
    """The workflow refuses these first; here they are forced through to the mount."""
    # A worker ran first, as in a task: the files are the sandbox uid's, not root's.
    [first] = await run(tools, checkout, Role.WORKER, call(ToolName.LIST_FILES, path="."))
    assert first.ok
    for role in (Role.EXPLORER, Role.REVIEWER):
        [outcome] = await run(
            tools, checkout, role, call(ToolName.WRITE_FILE, path="x.txt", content="x")
        )
        assert not outcome.ok
        assert "Read-only file system" in outcome.output
        assert not (checkout.worktree / "x.txt").exists()


async def test_unsafe_paths_are_refused_before_the_sandbox(
    tools: ToolActivities, checkout: Checkout
) -> None:
    outcomes = await run(
        tools,
        checkout,
        Role.WORKER,
        call(ToolName.READ_FILE, path="../../outside/secret.txt"),
        call(ToolName.WRITE_FILE, path="/etc/passwd", content="x"),
        call(ToolName.WRITE_FILE, path=".git/config", content="x"),
    )
    for outcome in outcomes:
        assert not outcome.ok and "outside the repository" in outcome.output


async def test_output_of_a_run_is_capped(
    tools: ToolActivities, settings: Settings, checkout: Checkout
) -> None:
    [outcome] = await run(
        tools,
        checkout,
        Role.WORKER,
        call(ToolName.RUN, command="seq 1 200000", timeout_seconds=10),
    )
    assert outcome.truncated and outcome.limit == "output"
    assert outcome.output.startswith("1\n2\n3\n")
    assert len(outcome.output) < settings.sandbox_output_limit_bytes + 200


async def test_a_run_is_stopped_at_its_timeout(tools: ToolActivities, checkout: Checkout) -> None:
    [slow, after] = await run(
        tools,
        checkout,
        Role.WORKER,
        call(ToolName.RUN, command="echo started; sleep 30", timeout_seconds=1),
        call(ToolName.RUN, command="echo still here", timeout_seconds=5),
    )
    assert not slow.ok and slow.limit == "timeout" and slow.exit_code is None
    assert "started" in slow.output and "longer than 1 s" in slow.output
    assert after.ok and "still here" in after.output


async def test_a_missing_worktree_fails_the_activity_for_good(
    tools: ToolActivities, checkout: Checkout, tmp_path: Path
) -> None:
    spec = SandboxSpec(
        sandbox_id=f"{checkout.task_id}-9", worktree_path=str(tmp_path / "gone"), role=Role.WORKER
    )
    calls = [call(ToolName.LIST_FILES, path=".")]
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(tools.run_calls, spec, checkout.base_commit, calls)
    assert caught.value.type == Errors.SANDBOX_UNAVAILABLE
    assert caught.value.non_retryable
