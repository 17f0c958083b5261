"""The change against a moved target branch (issue #12 item 6), on real git repositories."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError

from activities import _git, _target
from api.schemas import RequestChangesBody
from switchboard import wire
from switchboard.contracts import (
    CommitInput,
    IntegrateInput,
    PreparedRepo,
    PrepareRepoInput,
    TargetInput,
    WorktreeInput,
)
from switchboard.models import TargetCheck
from switchboard.settings import Settings
from tests.unit.test_repo import TASK, commit_file, settings, source
from workflows import _target as flow

__all__ = ["settings", "source"]


def _change(settings: Settings, prepared: PreparedRepo, files: dict[str, str]) -> str:
    """One worker's commit on its branch, integrated: the combined change's commit."""
    info = _git.create_worktree(
        settings,
        WorktreeInput(
            task_id=TASK,
            index=1,
            mirror_path=prepared.mirror_path,
            base_commit=prepared.base_commit,
            branch=wire.subagent_branch(TASK, 1),
        ),
    )
    for name, text in files.items():
        (Path(info.path) / name).parent.mkdir(parents=True, exist_ok=True)
        (Path(info.path) / name).write_text(text)
    _git.commit_worktree(
        settings,
        CommitInput(worktree_path=info.path, base_commit=prepared.base_commit, message="work"),
    )
    outcome = _git.integrate_branches(
        settings,
        IntegrateInput(
            task_id=TASK,
            repo=prepared.repo,
            mirror_path=prepared.mirror_path,
            base_commit=prepared.base_commit,
            branches=[info.branch],
            integration_branch=f"{wire.task_branch(TASK)}/merged",
            target_branch=wire.task_branch(TASK),
            is_local=True,
        ),
    )
    assert outcome.result.commit is not None
    return outcome.result.commit


def test_target_unmoved_moved_and_conflicting(settings: Settings, source: Path) -> None:
    prepared = _git.prepare_mirror(settings, PrepareRepoInput(repo=str(source), task_id=TASK))
    change = _change(settings, prepared, {"src/app.py": "line 1\nCHANGED\nline 3\n"})

    same = _target.check_target(settings, _input(prepared, change))
    assert (same.tip, same.behind, same.conflicts) == (prepared.base_commit, 0, [])
    assert same.message.startswith("up to date with trunk")

    commit_file(source, "docs/new.md", "elsewhere\n")
    tip = commit_file(source, "README.md", "hello again\n")
    moved = _target.check_target(settings, _input(prepared, change))
    assert (moved.tip, moved.behind, moved.conflicts) == (tip, 2, [])
    assert "behind trunk by 2 commits; merges cleanly" in moved.message

    tip = commit_file(source, "src/app.py", "line 1\nTHEIRS\nline 3\n")
    conflicting = _target.check_target(settings, _input(prepared, change))
    assert (conflicting.tip, conflicting.behind) == (tip, 3)
    assert conflicting.conflicts == ["src/app.py"]
    assert "conflicts with its tip" in conflicting.message


def test_a_fixed_base_has_no_tip_and_a_lost_repository_is_an_error(
    settings: Settings, source: Path
) -> None:
    prepared = _git.prepare_mirror(
        settings, PrepareRepoInput(repo=str(source), base_ref="v1", task_id=TASK)
    )
    fixed = _target.check_target(settings, _input(prepared, None))
    assert fixed.tip is None and fixed.behind == 0
    assert "v1 is not a branch" in fixed.message

    gone = source.rename(source.with_name("moved-away"))
    assert gone.is_dir()
    with pytest.raises(ApplicationError) as raised:
        _target.check_target(settings, _input(prepared, None, branch="trunk"))
    assert raised.value.type == wire.Errors.REPO_FETCH_FAILED
    assert not raised.value.non_retryable


def _input(prepared: PreparedRepo, change: str | None, branch: str | None = None) -> TargetInput:
    return TargetInput(
        task_id=TASK,
        repo=prepared.repo,
        mirror_path=prepared.mirror_path,
        branch=branch or prepared.base_ref,
        base_commit=prepared.base_commit,
        change_commit=change,
    )


def _check(tip: str | None, behind: int = 0, conflicts: tuple[str, ...] = ()) -> TargetCheck:
    check = TargetCheck(
        branch="main",
        base_commit="b" * 40,
        tip=tip,
        behind=behind,
        conflicts=list(conflicts),
        checked_at=datetime.now(UTC),
    )
    check.message = _target.describe(check)
    return check


def test_the_merge_stops_only_on_a_conflict_the_approver_was_not_shown() -> None:
    shown_clean = _check("1" * 40, behind=1)
    assert flow.stops_merge(shown_clean, _check("1" * 40, behind=1)) == ""
    assert flow.stops_merge(shown_clean, _check("2" * 40, behind=2)) == ""  # moved, still clean
    now = _check("2" * 40, behind=2, conflicts=("a.txt",))
    assert "moved since the approval" in flow.stops_merge(shown_clean, now)
    assert "a.txt" in flow.stops_merge(None, now)
    shown_conflict = _check("2" * 40, behind=2, conflicts=("a.txt",))
    assert flow.stops_merge(shown_conflict, now) == ""  # approved knowing it


def test_a_rebase_is_refused_with_nothing_to_rebase_onto_or_a_conflict() -> None:
    for check, why in [
        (None, "not checked"),
        (_check(None), "cannot rebase"),
        (_check("1" * 40), "nothing to rebase"),
        (_check("1" * 40, behind=1, conflicts=("a.txt",)), "conflicts with its tip"),
    ]:
        with pytest.raises(ApplicationError) as refused:
            flow.require_rebasable(check)
        assert why in refused.value.message
        assert refused.value.type == wire.Errors.WRONG_PHASE
    flow.require_rebasable(_check("1" * 40, behind=3))


def test_a_rebase_needs_no_feedback_any_other_request_does() -> None:
    assert RequestChangesBody.model_validate({"rebase": True}).feedback == ""
    assert RequestChangesBody.model_validate({"only_failed": True}).only_failed
    for body in ({}, {"feedback": "  "}):
        with pytest.raises(ValidationError, match="feedback must not be blank"):
            RequestChangesBody.model_validate(body)


def test_the_tip_is_fetched_only_when_it_is_new_to_the_task_repository(
    settings: Settings, source: Path
) -> None:
    """A check that finds the tip it already has (the task's base, or the tip a check
    fetched before) fetches nothing: `git fetch` would write FETCH_HEAD."""
    prepared = _git.prepare_mirror(settings, PrepareRepoInput(repo=str(source), task_id=TASK))
    fetch_head = Path(prepared.mirror_path) / "FETCH_HEAD"

    unmoved = _target.check_target(settings, _input(prepared, None))
    assert (unmoved.tip, unmoved.behind) == (prepared.base_commit, 0)
    assert not fetch_head.exists()

    tip = commit_file(source, "docs/new.md", "elsewhere\n")
    moved = _target.check_target(settings, _input(prepared, None))
    assert (moved.tip, moved.behind) == (tip, 1)
    assert fetch_head.exists()

    fetch_head.unlink()
    again = _target.check_target(settings, _input(prepared, None))
    assert (again.tip, again.behind, again.message) == (tip, 1, moved.message)
    assert not fetch_head.exists()
