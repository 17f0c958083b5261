"""Wire names: every string that crosses a process boundary, defined once.

Task queues, workflow/signal/query/update names, activity names, error types and
search attribute keys are imported from here and never retyped as literals.
"""

from __future__ import annotations

from typing import Final

from temporalio.common import SearchAttributeKey

TASK_QUEUE: Final = "switchboard"
"""Shared queue: workflows and activities that touch no worktree."""

HOST_QUEUE_PREFIX: Final = "switchboard-host-"
"""Per-host queues (`switchboard-host-<host id>`): activities that touch a worktree."""

TASK_ID_PREFIX: Final = "task-"
BRANCH_PREFIX: Final = "switchboard/"


class Workflows:
    TASK: Final = "DelegatedTaskWorkflow"
    SUBAGENT: Final = "SubagentWorkflow"
    MIRROR_MAINTENANCE: Final = "MirrorMaintenanceWorkflow"


class Updates:
    APPROVE: Final = "approve"
    REQUEST_CHANGES: Final = "request_changes"
    REJECT: Final = "reject"
    CANCEL: Final = "cancel"


class Signals:
    STEER: Final = "steer"
    SUBAGENT_PROGRESS: Final = "subagent_progress"
    STEP_WAITING: Final = "step_waiting"
    """A subagent's step activity to its own workflow: still waiting (see step_heartbeat)."""


class Queries:
    STATUS: Final = "status"
    EVENTS: Final = "events"
    DIFF: Final = "diff"


class Conversation:
    """Workflow, update and query names of a chat session (`ConversationWorkflow`)."""

    WORKFLOW: Final = "ConversationWorkflow"
    POST_MESSAGE: Final = "post_message"
    CLAIM_TURN: Final = "claim_turn"
    RECORD_TURN: Final = "record_turn"
    RECORD_TASK_EVENTS: Final = "record_task_events"
    CLOSE: Final = "close_session"
    STATE: Final = "session_state"
    ENTRIES: Final = "session_entries"
    TURN_CONTEXT: Final = "turn_context"


class Activities:
    PREPARE_REPO: Final = "prepare_repo"
    PLAN_SUBTASKS: Final = "plan_subtasks"
    CREATE_WORKTREE: Final = "create_worktree"
    SUBAGENT_STEP: Final = "subagent_step"
    FINISH_SUBAGENT: Final = "finish_subagent"
    INTEGRATE_BRANCHES: Final = "integrate_branches"
    CLEANUP_TASK: Final = "cleanup_task"
    CHECK_TARGET: Final = "check_target"
    GC_MIRRORS: Final = "gc_mirrors"


class Errors:
    """`ApplicationError.type` values; the non-retryable ones are listed below."""

    INVALID_INPUT: Final = "InvalidInput"
    REPO_NOT_FOUND: Final = "RepoNotFound"
    REPO_FETCH_FAILED: Final = "RepoFetchFailed"
    REPO_UNREACHABLE: Final = "RepoUnreachable"
    MODEL_OUTPUT_INVALID: Final = "ModelOutputInvalid"
    MODEL_UNAVAILABLE: Final = "ModelUnavailable"
    SANDBOX_UNAVAILABLE: Final = "SandboxUnavailable"
    WRONG_PHASE: Final = "WrongPhase"
    TASK_FAILED: Final = "TaskFailed"
    WORKER_LOST: Final = "WorkerLost"
    DISK_LIMIT: Final = "DiskLimitExceeded"
    TASK_ENDED: Final = "TaskEnded"
    """An activity of a task that already ended on its host (it outlived its workflow)."""
    FORBIDDEN: Final = "Forbidden"
    """An update validator refused the caller's identity claim (role, tenant, four-eyes)."""


NON_RETRYABLE_ERRORS: Final = (
    Errors.INVALID_INPUT,
    Errors.REPO_UNREACHABLE,
    Errors.REPO_NOT_FOUND,
    Errors.SANDBOX_UNAVAILABLE,
    Errors.DISK_LIMIT,
)


class Patches:
    """`workflow.patched` ids: each marks a change of a workflow's commands (see the
    upgrade policy in docs/operations.md)."""

    TARGET_CHECK: Final = "target-check"
    """The task compares its change with the target branch at the gate and at merge."""
    TARGET_CHECK_BESIDE: Final = "target-check-beside-integration"
    """The gate's target check begins beside the integration (when no review follows)."""
    TOKENS_ATTRIBUTE: Final = "tokens-search-attribute"
    """The task sets `SwitchboardTokens` with its phase (per-tenant tokens per day)."""
    SUBAGENT_CANCEL_WAITS: Final = "subagent-cancel-waits"
    """A cancelled subagent ends only once its running activity acknowledged the cancel."""
    AUDIT_APPROVER: Final = "audit-approver-attribute"
    """A decision sets the `SwitchboardApprover` search attribute."""


class SearchAttributes:
    OWNER: Final = SearchAttributeKey.for_keyword("SwitchboardOwner")
    PHASE: Final = SearchAttributeKey.for_keyword("SwitchboardPhase")
    REPO: Final = SearchAttributeKey.for_keyword("SwitchboardRepo")
    TENANT: Final = SearchAttributeKey.for_keyword("SwitchboardTenant")
    TOKENS: Final = SearchAttributeKey.for_int("SwitchboardTokens")
    """Model tokens the task's subagents have spent so far (set at each phase change)."""
    APPROVER: Final = SearchAttributeKey.for_keyword("SwitchboardApprover")
    """The owner key of whoever decided the task last (approved, changes, rejected)."""

    ALL: Final = (OWNER, PHASE, REPO, TENANT, TOKENS, APPROVER)


def mirror_gc_schedule_id(host_id: str) -> str:
    """The Temporal Schedule that collects garbage in one host's mirrors."""
    return f"switchboard-mirror-gc-{host_id}"


def host_queue(host_id: str) -> str:
    return f"{HOST_QUEUE_PREFIX}{host_id}"


def task_branch(task_id: str) -> str:
    return f"{BRANCH_PREFIX}{task_id}"


def subagent_workflow_id(task_id: str, index: int, round_number: int) -> str:
    return f"{task_id}-sub{index}-r{round_number}"


def subagent_branch(task_id: str, index: int) -> str:
    return f"{BRANCH_PREFIX}{task_id}/{index}"
