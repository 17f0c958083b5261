"""Timeouts and retry policies of every activity call, named in one place."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

from switchboard.wire import NON_RETRYABLE_ERRORS

PREPARE_REPO_TIMEOUT = timedelta(minutes=15)
PLAN_TIMEOUT = timedelta(minutes=5)
WORKTREE_TIMEOUT = timedelta(minutes=15)
SANDBOX_START_TIMEOUT = timedelta(minutes=3)
LLM_TURN_TIMEOUT = timedelta(minutes=10)
RUN_TOOLS_TIMEOUT = timedelta(minutes=30)
STEP_TIMEOUT = LLM_TURN_TIMEOUT + RUN_TOOLS_TIMEOUT
COMMIT_TIMEOUT = timedelta(minutes=5)
INTEGRATE_TIMEOUT = timedelta(minutes=15)
CLEANUP_TIMEOUT = timedelta(minutes=5)

# Short heartbeats: a killed worker is noticed within seconds, not at start-to-close.
HEARTBEAT_TIMEOUT = timedelta(seconds=5)
LONG_HEARTBEAT_TIMEOUT = timedelta(seconds=30)

# Model and git hiccups (429, 5xx, a busy remote) are transient: back off and retry.
TRANSIENT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=8,
    non_retryable_error_types=list(NON_RETRYABLE_ERRORS),
)

# A planner that keeps returning garbage will not get better: fail the task clearly.
PLAN_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_attempts=3,
    non_retryable_error_types=list(NON_RETRYABLE_ERRORS),
)

# Tool runs are not idempotent (a shell command may have run): retry only a little.
TOOLS_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_attempts=3,
    non_retryable_error_types=list(NON_RETRYABLE_ERRORS),
)

# Steps kept per subagent before the text of older tool outputs is shortened in events.
EVENT_OUTPUT_PREVIEW_CHARS = 300
