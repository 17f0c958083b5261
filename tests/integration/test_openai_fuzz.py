"""Schemathesis over the OpenAI-compatible routes only (`/v1/models`,
`/v1/chat/completions`, `/v1/responses`: the `openai` tag): no server error, and
OpenAI's error shape on every 4xx (`openai_error_shape.py`, a custom check), against
the running API (uvicorn on 127.0.0.1, the dev server, a worker, the scripted model).

Bounded like test_openapi_fuzz (a few examples per operation, a time budget).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from switchboard.model_server import ModelServerHandle
from switchboard.settings import Settings
from tests.integration.openai_error_shape import openai_error_shape
from tests.integration.test_conversation import chat_model
from tests.integration.test_conversation_api import ApiServer, api
from tests.integration.test_openapi_fuzz import schemathesis_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

__all__ = ["api", "chat_model"]  # fixtures

EXAMPLES = int(os.environ.get("SWITCHBOARD_FUZZ_EXAMPLES", "12"))
MAX_SECONDS = 60
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,openai_error_shape"
ROOT = Path(__file__).resolve().parents[2]


async def test_openai_routes_answer_no_server_error_and_openai_errors(
    settings: Settings,
    temporal_env: WorkflowEnvironment,
    worker: None,
    chat_model: ModelServerHandle,
    tmp_path: Path,
) -> None:
    target = temporal_env.client.service_client.config.target_host
    bounded = settings.model_copy(
        update={
            "temporal_address": target,
            "max_open_sessions_per_user": 5,
            # A fuzzed "delegate: ..." must not hold a stream open on its task.
            "openai_stream_progress_seconds": 0.0,
        }
    )
    server = ApiServer(bounded)
    await server.start()
    try:
        # 503 is the documented "retry later" under a busy shared worker (as in
        # test_openapi_fuzz); every other 5xx fails.
        (tmp_path / "schemathesis.toml").write_text(
            '[checks.not_a_server_error]\nexpected-statuses = ["2xx", "3xx", "4xx", "503"]\n'
        )
        env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.integration.openai_error_shape",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        process = await asyncio.create_subprocess_exec(
            *_command(server.url, tmp_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
            env=env,
        )
        output, _ = await asyncio.wait_for(process.communicate(), MAX_SECONDS + 120)
    finally:
        await server.stop()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-20_000:]
    assert "5 selected" in text and " passed" in text, text[-5_000:]
    assert " failed" not in text, text[-5_000:]


async def test_the_error_shape_check_tells_openai_errors_from_others(api: ApiServer) -> None:
    """The custom check is not vacuous: Switchboard's own `{"detail"}` 404 fails it."""
    async with httpx.AsyncClient(base_url=api.url) as http:
        openai_404 = await http.get("/v1/models/gpt-nope")
        own_404 = await http.get("/v1/tasks/task-nope")
        answer = await http.get("/v1/models")
    assert openai_error_shape(None, openai_404, None) is True
    assert openai_error_shape(None, answer, None) is None
    with pytest.raises(AssertionError, match="without OpenAI's error object"):
        openai_error_shape(None, own_404, None)


def _command(url: str, work: Path) -> list[str]:
    selection = ["--include-tag", "openai"]
    return schemathesis_command(url, work, checks=CHECKS, examples=EXAMPLES, selection=selection)
