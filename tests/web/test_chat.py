"""The chat view: streaming Markdown, live titles, tool cards, Stop, errors with Retry, the model picker, and
hostile Markdown rendered harmless."""

from __future__ import annotations

import json
from pathlib import Path

from playwright.async_api import Dialog, expect

from tests.conftest import TestUser, UserFactory
from tests.fakes.openai_script import call, fail, say
from tests.mcp.support import fake_stdio
from tests.web.conftest import (
    TITLE,
    Web,
    WebFactory,
    articles,
    axe_violations,
    body,
    describe,
    send,
    words,
)


async def test_an_answer_streams_in_as_markdown_and_the_chat_gets_its_title(web: Web, user: TestUser) -> None:
    page = await web.new_page()
    await web.sign_in(page, user)
    text = "Here is **bold** and `code`:\n\n```python\nprint('hi')\n```\n\n" + words(40)
    web.fake.script(say(text, delay=0.05))
    await send(page, "Show me some Markdown")
    answer = articles(page, "assistant").last
    await expect(answer).to_contain_text("Here is bold")
    await expect(page.get_by_role("button", name="Stop")).to_be_visible()  # still streaming
    await expect(answer).to_contain_text("w39")
    await expect(page.get_by_role("button", name="Send")).to_be_visible()
    await expect(answer.locator("strong")).to_have_text("bold")
    await expect(answer.get_by_role("button", name="Copy code")).to_be_visible()
    await expect(answer.locator("code.hljs")).to_contain_text("print")
    await expect(answer).to_contain_text("out tokens")  # usage of the answer
    await expect(body(articles(page, "user").first)).to_have_text("Show me some Markdown")
    await expect(articles(page, "user")).to_have_count(1)
    # The first exchange names the chat: the title arrives over the socket and shows in the sidebar.
    await expect(page.get_by_role("navigation", name="Chats").get_by_role("link", name=TITLE)).to_be_visible()
    await expect(page.get_by_role("status", name="Context")).not_to_have_text("0 / 1,000,000 tokens")
    assert page.url.startswith(web.base_url + "/s/")
    session_id = page.url.rsplit("/", 1)[1]
    history = await web.history(user, session_id)
    assert [(m["seq"], m["role"]) for m in history] == [(1, "user"), (2, "assistant")]
    assert await answer.get_attribute("data-seq") == "2"
    assert history[1]["content"] == text
    assert not await axe_violations(page), describe(await axe_violations(page))


async def test_enter_sends_and_shift_enter_breaks_the_line(web: Web, user: TestUser) -> None:
    session = await web.create_session(user)
    page = await web.new_page()
    await web.sign_in(page, user, f"/s/{session['id']}")
    web.fake.script(say("Two lines received."))
    box = page.get_by_role("textbox", name="Message")
    await box.fill("first line")
    await box.press("Shift+Enter")
    await box.press_sequentially("second line")
    await box.press("Enter")
    await expect(body(articles(page, "assistant").last)).to_have_text("Two lines received.")
    history = await web.history(user, session["id"])
    assert history[0]["content"] == "first line\nsecond line"
    await expect(box).to_have_value("")


async def test_a_tool_call_shows_as_a_card_with_its_output(
    web_factory: WebFactory, user_factory: UserFactory, tmp_path: Path
) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"testtools": fake_stdio(pool_size=1, timeout_s=30)}}))
    web = await web_factory(mcp_config=config)
    user = await user_factory(web.server)
    session = await web.create_session(user)
    page = await web.new_page()
    await web.sign_in(page, user, f"/s/{session['id']}")
    web.fake.script(call("echo", {"text": "hello tools"}, text="Let me echo that."), say("It said hello tools."))
    await send(page, "echo something")
    card = page.get_by_role("group", name="echo")
    await expect(card).to_be_visible()
    # Two paragraphs: the answer after the tool call starts a new one.
    await expect(body(articles(page, "assistant").last).locator("p")).to_have_text(
        ["Let me echo that.", "It said hello tools."]
    )
    await expect(card).to_contain_text("ok")
    await expect(card).to_contain_text("testtools")  # the MCP server's name
    await card.locator("summary").click()
    await expect(card.locator(".tool-output")).to_have_text("hello tools")
    await expect(card.locator(".tool-args")).to_contain_text('"text": "hello tools"')
    history = await web.history(user, session["id"])
    assert [m["role"] for m in history] == ["user", "assistant", "tool"]
    assert await articles(page, "tool").get_attribute("data-seq") == "3"


async def test_stop_keeps_the_partial_answer_and_the_next_message_works(web: Web, user: TestUser) -> None:
    session = await web.create_session(user)
    page = await web.new_page()
    await web.sign_in(page, user, f"/s/{session['id']}")
    web.fake.script(say(words(300), delay=0.05))
    await send(page, "talk for a long time")
    answer = articles(page, "assistant").last
    await expect(answer).to_contain_text("w5 ")
    await page.get_by_role("button", name="Stop").click()
    await expect(answer).to_contain_text("Stopped")
    await expect(page.get_by_role("button", name="Send")).to_be_visible()
    history = await web.history(user, session["id"])
    assert history[1]["status"] == "interrupted"
    shown = await body(answer).inner_text()
    assert shown == history[1]["content"]
    assert "w299" not in shown

    web.fake.script(say("The second answer."))
    await send(page, "and now?")
    await expect(body(articles(page, "assistant").last)).to_have_text("The second answer.")
    # Escape stops a run too.
    web.fake.script(say(words(300), delay=0.05))
    await send(page, "once more")
    await expect(articles(page, "assistant").last).to_contain_text("w5 ")
    await page.keyboard.press("Escape")
    await expect(articles(page, "assistant").last).to_contain_text("Stopped")
    assert [m["status"] for m in await web.history(user, session["id"]) if m["role"] == "assistant"] == [
        "interrupted",
        "complete",
        "interrupted",
    ]


async def test_a_model_error_that_is_not_retryable_shows_without_retry(web: Web, user: TestUser) -> None:
    session = await web.create_session(user)
    page = await web.new_page()
    await web.sign_in(page, user, f"/s/{session['id']}")
    web.fake.script(fail(400, message="the model refused"))
    await send(page, "please fail")
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("The model provider answered 400: the model refused")
    await expect(articles(page, "assistant").last).to_contain_text("Failed")
    await expect(alert.get_by_role("button", name="Retry")).to_have_count(0)
    await alert.get_by_role("button", name="Dismiss error").click()
    await expect(page.get_by_role("alert")).to_have_count(0)


async def test_a_retryable_model_error_is_retried_from_the_alert(web: Web, user: TestUser) -> None:
    session = await web.create_session(user)
    page = await web.new_page()
    await web.sign_in(page, user, f"/s/{session['id']}")
    web.fake.script(*[fail(503)] * 6)
    await send(page, "hello?")
    retry = page.get_by_role("alert").get_by_role("button", name="Retry")
    await expect(retry).to_be_visible(timeout=60_000)
    web.fake.reset()
    web.fake.script(say("Back again."))
    await retry.click()
    await expect(body(articles(page, "assistant").last)).to_have_text("Back again.")
    await expect(page.get_by_role("alert")).to_have_count(0)


async def test_the_model_picker_changes_the_session_model(web: Web, user: TestUser) -> None:
    session = await web.create_session(user)
    page = await web.new_page()
    await web.sign_in(page, user, f"/s/{session['id']}")
    picker = page.get_by_role("combobox", name="Model")
    await expect(picker).to_have_value("gpt-4.1-mini")
    await picker.select_option("gpt-4o-mini")
    await expect(page.get_by_role("status", name="Context")).to_have_text("0 / 128,000 tokens")
    async with web.api(user) as c:
        assert (await c.get(f"/sessions/{session['id']}")).json()["model"] == "gpt-4o-mini"
    web.fake.script(say("Answered by the other model."))
    await send(page, "which model?")
    await expect(body(articles(page, "assistant").last)).to_have_text("Answered by the other model.")
    assert web.fake.requests[-1].body["model"] == "gpt-4o-mini"


HOSTILE = (
    'Hello <img src=x onerror="alert(1)"> and [a link](javascript:alert(2)) and <a href="javascript:alert(3)">'
    'another</a> <script>alert(4)</script><svg onload=alert(5)></svg> <iframe src="javascript:alert(6)"></iframe>'
    ' <details open ontoggle="alert(7)">x</details> <a href="https://example.com/" onclick="alert(8)">fine</a>'
)


async def test_hostile_markdown_does_nothing(web: Web, user: TestUser) -> None:
    session = await web.create_session(user)
    page = await web.new_page()
    dialogs: list[str] = []

    async def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    await web.sign_in(page, user, f"/s/{session['id']}")
    web.fake.script(say(HOSTILE, delay=0.01))
    await send(page, HOSTILE)  # the user's own text too
    answer = articles(page, "assistant").last
    await expect(body(answer)).to_contain_text("fine")
    await expect(page.get_by_role("button", name="Send")).to_be_visible()
    for link in await answer.get_by_role("link").all():
        await link.click(modifiers=["Control"])  # would run a javascript: URL, if one were left
    await page.reload()  # and once more from the history
    await expect(body(articles(page, "assistant").last)).to_contain_text("fine")
    region = page.get_by_role("region", name="Conversation")
    for attribute in ("onerror", "onload", "onclick", "ontoggle"):
        assert await region.locator(f"[{attribute}]").count() == 0, attribute
    assert await region.locator("script, iframe, svg[onload]").count() == 0
    hrefs = await region.locator("a[href]").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert hrefs == ["https://example.com/"]
    assert await articles(page, "user").last.locator("img").count() == 0  # user text is text
    assert dialogs == []
    # Chromium reports (never runs) the inline handlers it meets while DOMPurify's inert DOMParser reads the
    # hostile text: expected here, and the CSP would refuse them anyway.
    web.errors[:] = [e for e in web.errors if "inline event handler" not in e]
