"""The web chat signing in with OpenID Connect (authorization code + PKCE) in headless
Chromium, against the real provider (`oidc-provider`, tests/idp) and its login page:
a requester delegates and sees no approve button (a forced call gets 403), an approver
of the same tenant approves, the requester sees the merge; an expired sign-in asks
again. Everything but the browser's clicks is real (see test_web_chat.py)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, Request, Route
from temporalio.testing import WorkflowEnvironment

from switchboard.model_server import ModelServerHandle
from switchboard.settings import Settings
from testkit.idp import API_RESOURCE, IdentityProvider, install_idp
from tests.e2e.test_web_chat import WAIT_MS, browser
from tests.integration.conftest import model, model_server, repo, settings, worker
from tests.integration.test_conversation import chat_model
from tests.integration.test_conversation_api import ApiServer

pytestmark = pytest.mark.e2e

__all__ = ["browser", "chat_model", "model", "model_server", "repo", "settings", "worker"]

LOOPBACK = re.compile(r"^http://127\.0\.0\.1[:/]")


class Stack:
    def __init__(self, api: ApiServer, idp: IdentityProvider) -> None:
        self.api = api
        self.idp = idp
        self.urls: list[str] = []


@pytest.fixture
async def stack(
    settings: Settings,
    temporal_env: WorkflowEnvironment,
    worker: None,
    chat_model: ModelServerHandle,
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    install_idp()
    target = temporal_env.client.service_client.config.target_host
    api = ApiServer(settings.model_copy(update={"temporal_address": target}))
    idp = IdentityProvider(tmp_path / "idp-keys.json", web_redirects=(api.url + "/",))
    idp.start()
    api.settings = api.settings.model_copy(
        update={
            "auth_mode": "oidc",
            "oidc_issuer": idp.issuer,
            "oidc_audience": "switchboard",
            "oidc_web_client_id": "switchboard-web",
            "oidc_web_scopes": "openid api",
            "oidc_web_resource": API_RESOURCE,
        }
    )
    await api.start()
    try:
        yield Stack(api, idp)
    finally:
        await api.stop()
        idp.stop()


async def _offline(route: Route) -> None:
    await route.abort()  # nothing beyond loopback (the login page links a web font)


async def sign_in(browser: Browser, stack: Stack, login: str) -> Page:
    """A fresh browser profile signs in as `login` on the provider's login page."""
    context = await browser.new_context()
    await context.route(lambda url: not LOOPBACK.match(url), _offline)
    page = await context.new_page()

    def seen(request: Request) -> None:
        stack.urls.append(request.url)

    page.on("request", seen)
    await page.goto(stack.api.url + "/")
    await page.wait_for_selector("#oidc-signin:not([hidden])", timeout=WAIT_MS)
    await page.click("#oidc-signin")
    await page.wait_for_selector("input[name=login]", timeout=WAIT_MS)
    assert page.url.startswith(stack.idp.issuer)
    await page.fill("input[name=login]", login)
    await page.fill("input[name=password]", "any password")
    await page.click("button[type=submit]")
    consent_or_app = "button.login-submit, #app:not([hidden])"
    await page.wait_for_selector(consent_or_app, timeout=WAIT_MS)
    if page.url.startswith(stack.idp.issuer):
        await page.click("button.login-submit")  # the provider's consent: Continue
    await page.wait_for_selector("#app:not([hidden])", timeout=WAIT_MS)
    assert "code=" not in page.url, "the authorization answer stays in the address bar"
    return page


async def force_approve(page: Page, task_id: str) -> tuple[int, str]:
    """What the API answers when the page's own token posts an approval."""
    status, text = await page.evaluate(
        """async (id) => {
            const response = await fetch(`/v1/tasks/${id}/approve`, {
                method: "POST",
                headers: Auth.headers({"Content-Type": "application/json"}),
                body: "{}",
            });
            return [response.status, await response.text()];
        }""",
        task_id,
    )
    return int(status), str(text)


async def test_requester_delegates_and_an_approver_approves_after_signing_in(
    browser: Browser, stack: Stack, repo: Path
) -> None:
    ann = await sign_in(browser, stack, "acme-ann")
    errors: list[str] = []
    ann.on("pageerror", lambda error: errors.append(str(error)))
    assert "Ann (acme requester) · acme · requester" in await ann.inner_text("#who")
    await ann.fill("#repo", str(repo))
    await ann.click("#new-session")
    await ann.wait_for_selector("#connection.live", timeout=WAIT_MS)
    await ann.fill("#input", "delegate: add a slugify helper")
    await ann.press("#input", "Enter")
    card = ann.locator(".task-card")
    await card.wait_for(timeout=WAIT_MS)
    task_id = await card.get_attribute("data-task")
    assert task_id
    await ann.wait_for_selector('.task-card[data-phase="awaiting_approval"]', timeout=WAIT_MS)

    # A requester gets no decision buttons, and the API refuses the call anyway.
    assert await ann.locator(".task-card button.approve").count() == 0
    assert await ann.locator(".task-card .awaiting-approver").count() == 1
    status, text = await force_approve(ann, task_id)
    assert status == 403 and "approver" in text, text

    # An approver of another tenant never sees it.
    gus = await sign_in(browser, stack, "globex-gus")
    listing = await gus.evaluate(
        "async () => (await fetch('/v1/tasks?limit=100', {headers: Auth.headers()})).json()"
    )
    assert task_id not in {row["task_id"] for row in listing["data"]}
    async with gus.expect_response(lambda r: "/v1/tasks?limit=" in r.url) as polled:
        pass  # the page's next poll of the tenant's tasks
    await (await polled.value).finished()
    await gus.wait_for_timeout(500)  # time to render what it listed
    assert await gus.locator(".task-card").count() == 0
    status, _ = await force_approve(gus, task_id)
    assert status == 404

    # An approver of the same tenant signs in, finds the task waiting, approves it.
    abe = await sign_in(browser, stack, "acme-abe")
    assert "approver" in await abe.inner_text("#who")
    approve = abe.locator(f'.task-card[data-task="{task_id}"] button.approve')
    await approve.wait_for(timeout=WAIT_MS)
    await approve.click()
    await ann.wait_for_selector('.task-card[data-phase="completed"]', timeout=WAIT_MS)
    await ann.wait_for_selector(".msg.event-merged", timeout=WAIT_MS)

    # The access token never appeared in a URL (only the one-time code did).
    token = await ann.evaluate("JSON.parse(sessionStorage.getItem('sb.auth')).token")
    assert token.count(".") == 2  # a JWT for the API's audience
    assert stack.urls and all(token not in url for url in stack.urls)
    assert token not in await ann.evaluate("JSON.stringify(localStorage)")

    # An expired sign-in: the page says so and offers to sign in again.
    await ann.evaluate(
        """() => {
            const saved = JSON.parse(sessionStorage.getItem('sb.auth'));
            saved.expires_at = Date.now() - 1000;
            sessionStorage.setItem('sb.auth', JSON.stringify(saved));
        }"""
    )
    await ann.reload()
    await ann.wait_for_selector("#oidc-signin:not([hidden])", timeout=WAIT_MS)
    assert "expired" in await ann.inner_text("#signin-message")
    assert errors == []
