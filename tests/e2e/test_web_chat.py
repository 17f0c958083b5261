"""The web chat in headless Chromium: type a request, watch tokens stream, the task card
appear and progress, keep chatting, survive an API restart, click Approve, see the
merge. The browser is Debian's `chromium` driven by Python playwright (no download);
the API, workflows, worker, sandboxes and scripted model are all real."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from switchboard.model_server import ModelServerHandle
from tests.integration.conftest import model, model_server, repo, settings, worker
from tests.integration.test_conversation import chat_model
from tests.integration.test_conversation_api import ApiServer, api

pytestmark = pytest.mark.e2e

__all__ = ["api", "chat_model", "model", "model_server", "repo", "settings", "worker"]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 90_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    async with async_playwright() as driver:
        launched = await driver.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            await launched.close()


def artefact_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SWITCHBOARD_ARTIFACTS_DIR") or tmp_path / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def test_chat_delegate_watch_approve_and_see_the_merge(
    browser: Browser,
    api: ApiServer,
    repo: Path,
    chat_model: ModelServerHandle,
    tmp_path: Path,
) -> None:
    chat_model.configure(token_rate=60)  # slow enough to see the answer being written
    page = await browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(api.url + "/")
    # Local mode: no sign-in, the page goes straight to the chat.
    await page.wait_for_selector("#app:not([hidden])", timeout=WAIT_MS)
    assert await page.locator("#signin").is_hidden()
    await page.fill("#repo", str(repo))
    await page.click("#new-session")
    await page.wait_for_selector("#connection.live", timeout=WAIT_MS)
    # Record every text a draft shows, to see the answer arrive piece by piece.
    await page.evaluate(
        """() => {
            window.draftTexts = [];
            new MutationObserver(() => {
                for (const el of document.querySelectorAll('.msg.draft')) {
                    window.draftTexts.push(el.textContent);
                }
            }).observe(document.querySelector('#messages'),
                       {subtree: true, childList: true, characterData: true});
        }"""
    )

    await page.fill("#input", "delegate: add a slugify helper")
    await page.press("#input", "Enter")
    await page.wait_for_selector(".msg.user >> text=delegate: add a slugify helper")
    card = page.locator(".task-card")
    await card.wait_for(timeout=WAIT_MS)
    await page.wait_for_selector(".msg.assistant >> text=Keep talking to me", timeout=WAIT_MS)
    drafts: list[str] = await page.evaluate("window.draftTexts")
    partial = [t for t in drafts if t and "hand this to a team" not in t]
    assert len(set(drafts)) > 3 and partial, f"no streamed tokens were shown: {drafts}"
    chat_model.configure(token_rate=0)

    # The card fills in as the task runs: subagents with their role and progress.
    await page.wait_for_selector(".task-card .subagents li", timeout=WAIT_MS)
    # The chat answers while the task runs.
    await page.fill("#input", "what is a slug?")
    await page.press("#input", "Enter")
    await page.wait_for_selector(
        ".msg.assistant >> text=You said: what is a slug?", timeout=WAIT_MS
    )

    # The API restarts mid-task: the page reconnects and resumes from its offset.
    await api.stop()
    await page.wait_for_selector("#connection:not(.live)", timeout=WAIT_MS)
    await api.start()
    await page.wait_for_selector("#connection.live", timeout=WAIT_MS)

    await page.wait_for_selector('.task-card[data-phase="awaiting_approval"]', timeout=WAIT_MS)
    await page.wait_for_selector(".msg.event-approval_needed", timeout=WAIT_MS)
    # Each subagent that ran a tool shows its last call's outcome and an excerpt.
    last_tools = await page.locator(".task-card .subagents .last-tool").all_inner_texts()
    assert last_tools and all(re.match(r"^\w+ (ok|failed \(.+\))", t) for t in last_tools)
    assert await page.locator(".task-card .target").count() == 0  # main did not move
    roles = await page.locator(".task-card .subagents .role").all_inner_texts()
    assert sorted(r.lower() for r in roles) == ["explorer", "worker", "worker"]
    await page.click(".task-card button.show-diff")
    await page.wait_for_selector("#diff-body .add", timeout=WAIT_MS)

    await page.click(".task-card button.approve")
    await page.wait_for_selector('.task-card[data-phase="completed"]', timeout=WAIT_MS)
    await page.wait_for_selector(".msg.event-merged", timeout=WAIT_MS)
    await page.screenshot(path=str(artefact_dir(tmp_path) / "web-chat.png"), full_page=True)

    # Nothing shown twice across the restart.
    assert await page.locator(".msg.user").count() == 2
    assert await page.locator(".msg.event-approval_needed").count() == 1
    assert await page.locator(".msg.event-merged").count() == 1
    assert await page.locator(".task-card").count() == 1
    assert errors == []
