"""`/v1/chat/completions` when things go wrong: a failed model call is an OpenAI
error with its status (streaming or not), and a client that drops its stream
early never strands its session's turn. Real uvicorn, workflows, worker, the
official `openai` client and the scripted model with injected faults."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from switchboard.model_server import ModelServerHandle
from tests.integration.test_conversation import chat_model
from tests.integration.test_conversation_api import ApiServer, api

pytestmark = pytest.mark.integration

__all__ = ["api", "chat_model"]

ATTEMPTS = 3
"""The gateway's model client tries three times (two retries)."""


def _client(api: ApiServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{api.url}/v1", api_key="unused", max_retries=0)


async def test_a_rate_limited_model_is_a_429_error_not_an_answer(
    api: ApiServer, chat_model: ModelServerHandle
) -> None:
    chat_model.add_fault("http_429", role="conversation", count=ATTEMPTS)
    client = _client(api)
    try:
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(
                model="switchboard",
                messages=[{"role": "user", "content": "hello"}],
                user="rate-limited",
            )
        body = limited.value.body
        assert isinstance(body, dict)
        assert body["type"] == "rate_limit_error" and body["code"] == "rate_limit_exceeded"
        assert "not answering" in body["message"]
        # The message is kept: the next one (model healthy again) is answered.
        reply = await client.chat.completions.create(
            model="switchboard", messages=[{"role": "user", "content": "hi"}], user="rate-limited"
        )
        assert reply.choices[0].message.content
    finally:
        await client.close()


async def test_a_failing_model_is_a_502_streaming_or_not(
    api: ApiServer, chat_model: ModelServerHandle
) -> None:
    client = _client(api)
    try:
        chat_model.add_fault("http_500", role="conversation", count=ATTEMPTS)
        with pytest.raises(openai.InternalServerError) as failed:
            await client.chat.completions.create(
                model="switchboard", messages=[{"role": "user", "content": "hi"}], user="s1"
            )
        assert failed.value.status_code == 502
        chat_model.add_fault("http_500", role="conversation", count=ATTEMPTS)
        with pytest.raises(openai.InternalServerError) as streamed:
            stream = await client.chat.completions.create(
                model="switchboard",
                messages=[{"role": "user", "content": "hi"}],
                user="s2",
                stream=True,
            )
            async for _ in stream:
                pass
        assert streamed.value.status_code == 502
    finally:
        await client.close()


async def test_a_stream_dropped_early_does_not_strand_the_session(
    api: ApiServer, chat_model: ModelServerHandle
) -> None:
    """Drop the stream at several points of the first ~30 ms; each next message answers."""
    chat_model.configure(latency_ms=20)
    headers = {"X-Switchboard-User": "dropper"}
    body = {"model": "switchboard", "stream": True, "user": "drops"}
    client = _client(api)
    try:
        for delay_ms in (0, 2, 5, 10, 15, 20, 30):
            async with httpx.AsyncClient(base_url=api.url, headers=headers) as raw:
                request = raw.build_request(
                    "POST",
                    "/v1/chat/completions",
                    json={**body, "messages": [{"role": "user", "content": f"drop {delay_ms}"}]},
                )
                sending = asyncio.create_task(raw.send(request, stream=True))
                await asyncio.sleep(delay_ms / 1000)
                sending.cancel()
                response = await asyncio.gather(sending, return_exceptions=True)
                if isinstance(response[0], httpx.Response):
                    await response[0].aclose()
            async with asyncio.timeout(30):
                reply = await client.chat.completions.create(
                    model="switchboard",
                    messages=[{"role": "user", "content": f"after {delay_ms}"}],
                    user="drops",
                    extra_headers=headers,
                )
            assert reply.choices[0].message.content, delay_ms
    finally:
        await client.close()
