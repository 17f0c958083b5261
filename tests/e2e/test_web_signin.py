"""The web chat with identity on, in headless Chromium (see test_web_chat.py).

Tokens mode: a pasted API token chats, rides as `Authorization: Bearer` on every call
and the session stream (never in a URL), lives in sessionStorage only, and a revoked
token sends the page back to sign-in with the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Request
from temporalio.testing import WorkflowEnvironment

from switchboard.api_tokens import TokenStore
from switchboard.identity import Role
from switchboard.model_server import ModelServerHandle
from switchboard.settings import Settings
from tests.e2e.test_web_chat import WAIT_MS, browser
from tests.integration.conftest import model, model_server, repo, settings, worker
from tests.integration.test_conversation import chat_model
from tests.integration.test_conversation_api import ApiServer

pytestmark = pytest.mark.e2e

__all__ = ["browser", "chat_model", "model", "model_server", "repo", "settings", "worker"]


@pytest.fixture
async def tokens_api(
    settings: Settings,
    temporal_env: WorkflowEnvironment,
    worker: None,
    chat_model: ModelServerHandle,
) -> AsyncIterator[ApiServer]:
    target = temporal_env.client.service_client.config.target_host
    server = ApiServer(
        settings.model_copy(update={"temporal_address": target, "auth_mode": "tokens"})
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_a_pasted_token_chats_and_a_revoked_one_signs_the_page_out(
    browser: Browser, tokens_api: ApiServer, repo: Path
) -> None:
    store = TokenStore(tokens_api.settings.api_tokens_file)
    token, record = store.create(
        subject="tess", tenant="acme", roles=[Role.REQUESTER], name="Tess Token"
    )
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sent: list[Request] = []
    page.on("request", lambda request: sent.append(request))

    await page.goto(tokens_api.url + "/")
    await page.wait_for_selector("#token-form:not([hidden])", timeout=WAIT_MS)
    assert await page.locator("#app").is_hidden()
    assert await page.locator("#oidc-signin").is_hidden()

    await page.fill("#token", "sb_00000000_not-a-token")
    await page.click("#token-signin")
    await page.wait_for_selector("#signin-message >> text=unknown or revoked", timeout=WAIT_MS)

    sent.clear()
    await page.fill("#token", token)
    await page.click("#token-signin")
    await page.wait_for_selector("#app:not([hidden])", timeout=WAIT_MS)
    assert "Tess Token · acme · requester" in await page.inner_text("#who")
    await page.fill("#repo", str(repo))
    await page.click("#new-session")
    await page.wait_for_selector("#connection.live", timeout=WAIT_MS)
    await page.fill("#input", "hello there")
    await page.press("#input", "Enter")
    await page.wait_for_selector(".msg.assistant >> text=You said: hello there", timeout=WAIT_MS)

    # The token went out only as a header, on the stream too, and stays in this tab.
    api_calls = [r for r in sent if "/v1/" in r.url and "/v1/auth/config" not in r.url]
    assert api_calls and all(token not in r.url for r in sent)
    authorizations = [(await r.all_headers()).get("authorization") for r in api_calls]
    assert authorizations == [f"Bearer {token}"] * len(api_calls)
    assert any("/events" in r.url for r in api_calls)
    local = await page.evaluate("JSON.stringify(localStorage)")
    assert token not in local
    assert token in await page.evaluate("JSON.stringify(sessionStorage)")

    # Revoked: the next call is refused and the page asks to sign in again, saying why.
    assert store.revoke(record.id)
    await page.fill("#input", "still there?")
    await page.press("#input", "Enter")
    await page.wait_for_selector("#signin:not([hidden])", timeout=WAIT_MS)
    assert "revoked" in await page.inner_text("#signin-message")
    assert token not in await page.evaluate("JSON.stringify(sessionStorage)")
    assert errors == []
