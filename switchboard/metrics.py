"""Switchboard's own metrics, emitted through the Temporal SDK's metric meter.

Workflows, activities and the SDK runtime share one Prometheus endpoint per
worker (`SWITCHBOARD_WORKER_METRICS_PORT`), so task outcomes counted in
workflow code (replay-safe: the SDK skips metrics while replaying) sit beside
the SDK's own `temporal_*` series. The API exposes its request metrics with
prometheus-client at `/metrics`.
"""

from __future__ import annotations

from typing import Final

from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

TASKS: Final = "switchboard_tasks_total"
APPROVAL_WAIT: Final = "switchboard_approval_wait_seconds"
SUBAGENT_STEPS: Final = "switchboard_subagent_steps_total"
TOOL_CALLS_DENIED: Final = "switchboard_tool_calls_denied_total"
TOOL_CALLS: Final = "switchboard_tool_calls_total"
LLM_TOKENS: Final = "switchboard_llm_tokens_total"
SANDBOX_START: Final = "switchboard_sandbox_start_seconds"


def count(meter: MetricMeter, name: str, value: int = 1, **labels: str) -> None:
    meter.create_counter(name).add(value, labels)


def observe(meter: MetricMeter, name: str, seconds: float, **labels: str) -> None:
    meter.create_histogram_float(name, unit="s").record(seconds, labels)


def prometheus_runtime(port: int, host: str = "127.0.0.1") -> Runtime:
    """A Temporal runtime that serves its metrics (and ours) at `http://host:port/metrics`."""
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(bind_address=f"{host}:{port}", durations_as_seconds=True)
        )
    )
