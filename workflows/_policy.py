"""Timeouts and retry policies of every activity call, named in one place."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

from switchboard.wire import NON_RETRYABLE_ERRORS

PREPARE_REPO_TIMEOUT = timedelta(minutes=15)
PLAN_TIMEOUT = timedelta(minutes=5)
WORKTREE_TIMEOUT = timedelta(minutes=15)
STEP_TIMEOUT = timedelta(minutes=40)
"""A model turn (up to 10 min) and the tools it asked for (up to 30 min)."""
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

# The planner: an outage (429, 5xx, a timeout) is retried like any model call, honouring
# Retry-After (`next_retry_delay`); the activity itself stops after three bad plans.
PLAN_RETRY = TRANSIENT_RETRY
