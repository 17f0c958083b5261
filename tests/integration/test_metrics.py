"""A worker's Prometheus endpoint: the SDK's series and Switchboard's own, after one task."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from entrypoints.worker import build_workers, run_workers
from switchboard import metrics
from switchboard.model_server import ModelServerHandle, parse_scenario
from switchboard.models import Phase, RejectInput, Role, SubtaskSpec, TaskRequest, TaskResult
from switchboard.settings import Settings
from switchboard.wire import Updates, Workflows
from testkit import free_port, wait_for_phase

pytestmark = pytest.mark.integration


def _value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_worker_exports_task_tool_token_and_sdk_metrics(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    repo: Path,
    model: ModelServerHandle,
) -> None:
    port = free_port()
    client = await Client.connect(
        temporal_env.client.service_client.config.target_host,
        data_converter=pydantic_data_converter,
        runtime=metrics.prometheus_runtime(port),
    )
    model.set_scenario(
        parse_scenario(
            {
                "roles": {
                    "explorer": [
                        {
                            "tool_calls": [
                                {"name": "write_file", "arguments": {"path": "x", "content": "y"}},
                                {"name": "list_files", "arguments": {"path": "."}},
                            ]
                        },
                        {"tool_calls": [{"name": "finish", "arguments": {"summary": "ok"}}]},
                    ]
                }
            }
        )
    )
    stop = asyncio.Event()
    running = asyncio.create_task(run_workers(build_workers(client, settings), stop))
    try:
        handle = await client.start_workflow(
            Workflows.TASK,
            TaskRequest(
                goal="Count me",
                repo=str(repo),
                subtasks=[SubtaskSpec(title="Look", role=Role.EXPLORER)],
                review=False,
            ),
            id=f"task-{uuid.uuid4().hex}",
            task_queue=settings.task_queue,
            result_type=TaskResult,
        )
        await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
        # An explorer-only task has nothing to merge, and an empty change cannot be
        # approved (issue #12 item 2): the decision here is a reject.
        await handle.execute_update(Updates.REJECT, RejectInput(by="ops"))
        assert (await handle.result()).phase is Phase.REJECTED
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        stop.set()
        await running

    assert _value(text, metrics.TASKS, outcome="rejected") == 1
    assert _value(text, metrics.TOOL_CALLS_DENIED, role="explorer", reason="not_allowed") == 1
    assert _value(text, metrics.TOOL_CALLS, tool="list_files", outcome="ok") == 1
    assert _value(text, metrics.SUBAGENT_STEPS, role="explorer") == 2
    assert _value(text, metrics.LLM_TOKENS, role="explorer", kind="prompt") > 0
    assert _value(text, metrics.APPROVAL_WAIT + "_count", decision="rejected") == 1
    assert _value(text, metrics.SANDBOX_START + "_count", backend="bwrap") == 1
    assert re.search(r"^temporal_workflow_completed", text, re.MULTILINE)
