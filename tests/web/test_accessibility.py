"""axe-core on the main views (no serious or critical violation), light and dark; the phone layout folds the
sidebar behind a button; everything is reachable by keyboard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
from playwright.async_api import expect

from tests.conftest import UserFactory
from tests.fakes.openai_script import call, say
from tests.mcp.support import fake_stdio
from tests.web.conftest import WebFactory, articles, axe_violations, describe, send

MARKDOWN = (
    "A list:\n\n- one\n- **two**\n\n```python\ndef f(x):\n    return x * 2  # doubled\n```\n\n"
    "| a | b |\n|---|---|\n| 1 | 2 |"
)


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_a_chat_with_messages_has_no_serious_accessibility_violation(
    scheme: Literal["light", "dark"], web_factory: WebFactory, user_factory: UserFactory, tmp_path: Path
) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"testtools": fake_stdio(pool_size=1, timeout_s=30)}}))
    web = await web_factory(mcp_config=config)
    user = await user_factory(web.server)
    session = await web.create_session(user, "Accessible chat")
    page = await web.new_page()
    await page.emulate_media(color_scheme=scheme)
    await web.sign_in(page, user, f"/s/{session['id']}")
    web.fake.script(call("echo", {"text": "hi"}, text="Calling a tool."), say(MARKDOWN))
    await send(page, "show everything")
    await expect(page.get_by_role("group", name="echo")).to_be_visible()
    await expect(articles(page, "assistant").last.locator("code.hljs")).to_be_visible()
    await expect(page.get_by_role("button", name="Send")).to_be_visible()
    await page.get_by_role("group", name="echo").locator("summary").click()
    violations = await axe_violations(page)
    assert not violations, describe(violations)


async def test_the_phone_layout_folds_the_sidebar_away(web_factory: WebFactory, user_factory: UserFactory) -> None:
    web = await web_factory()
    user = await user_factory(web.server)
    await web.create_session(user, "Pocket chat")
    page = await web.new_page()
    await page.set_viewport_size({"width": 390, "height": 844})
    await web.sign_in(page, user)
    chats = page.get_by_role("navigation", name="Chats")
    await expect(chats).to_be_hidden()
    menu = page.get_by_role("button", name="Show chats")
    await menu.click()
    await expect(chats).to_be_visible()
    await expect(menu).to_have_attribute("aria-expanded", "true")
    await chats.get_by_role("link", name="Pocket chat").click()
    await expect(chats).to_be_hidden()
    await expect(menu).to_have_attribute("aria-expanded", "false")
    await expect(page.get_by_role("heading", name="Pocket chat")).to_be_visible()
    violations = await axe_violations(page)
    assert not violations, describe(violations)


async def test_the_keyboard_reaches_the_composer_and_sends(web_factory: WebFactory, user_factory: UserFactory) -> None:
    web = await web_factory()
    user = await user_factory(web.server)
    session = await web.create_session(user, "Keys")
    page = await web.new_page()
    await web.sign_in(page, user, f"/s/{session['id']}")
    box = page.get_by_role("textbox", name="Message")
    await expect(box).to_be_focused()  # the composer has focus when a chat opens
    web.fake.script(say("Typed, not clicked."))
    await page.keyboard.type("no mouse")
    await page.keyboard.press("Enter")
    await expect(articles(page, "assistant").last).to_contain_text("Typed, not clicked.")
    # Tab moves on to the composer's buttons, with a visible focus ring.
    await box.focus()
    await page.keyboard.press("Tab")
    focused = page.get_by_role("button", name="Attach file")
    await expect(focused).to_be_focused()
    outline = await focused.evaluate("el => getComputedStyle(el).outlineStyle")
    assert outline != "none"
