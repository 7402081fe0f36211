"""Model settings, reasoning and images in the browser client, against a real server and the fake model."""

from __future__ import annotations

from playwright.async_api import expect

from tests.conftest import TestUser
from tests.fakes.openai_script import say
from tests.web.conftest import Web, articles, axe_violations, describe, send
from tests.web.test_files import attach, png


async def test_the_settings_panel_saves_what_the_next_request_carries(web: Web, user: TestUser) -> None:
    session = await web.create_session(user)
    page = await web.new_page()
    await web.sign_in(page, user, f"/s/{session['id']}")
    await page.get_by_role("button", name="Model settings").click()
    dialog = page.get_by_role("dialog", name="Model settings")
    await expect(dialog).to_be_visible()
    assert not await axe_violations(page), describe(await axe_violations(page))
    await dialog.get_by_role("spinbutton", name="Temperature").fill("5")
    await dialog.get_by_role("button", name="Save settings").click()
    await expect(dialog.get_by_role("alert")).to_have_text("Temperature is 0 to 2.")  # refused before sending
    await dialog.get_by_role("spinbutton", name="Temperature").fill("0.4")
    await dialog.get_by_role("spinbutton", name="Max output tokens").fill("300")
    await dialog.get_by_role("combobox", name="Reasoning effort").select_option("high")
    await dialog.get_by_role("button", name="Save settings").click()
    await expect(dialog).to_have_count(0)
    async with web.api(user) as c:
        stored = (await c.get(f"/sessions/{session['id']}")).json()["settings"]
    assert stored == {"temperature": 0.4, "top_p": None, "max_output_tokens": 300, "reasoning_effort": "high"}
    web.fake.script(say("Tuned."))
    await send(page, "hello")
    await expect(articles(page, "assistant").last).to_contain_text("Tuned.")
    body = web.fake.requests[0].body
    assert (body["temperature"], body["reasoning_effort"]) == (0.4, "high")
    # The panel opens again with what was saved; clearing a field goes back to the provider's default.
    await page.get_by_role("button", name="Model settings").click()
    await expect(dialog.get_by_role("spinbutton", name="Temperature")).to_have_value("0.4")
    await dialog.get_by_role("spinbutton", name="Temperature").fill("")
    await dialog.get_by_role("button", name="Save settings").click()
    await expect(dialog).to_have_count(0)
    async with web.api(user) as c:
        assert (await c.get(f"/sessions/{session['id']}")).json()["settings"]["temperature"] is None


async def test_reasoning_shows_in_a_collapsible_block_live_and_after_reload(web: Web, user: TestUser) -> None:
    session = await web.create_session(user)
    page = await web.new_page()
    await web.sign_in(page, user, f"/s/{session['id']}")
    web.fake.script(say("The answer is four.", reasoning="add two and two", delay=0.02))
    await send(page, "2+2?")
    answer = articles(page, "assistant").last
    await expect(answer).to_contain_text("The answer is four.")
    block = answer.locator("details.reasoning")
    await expect(block).to_be_visible()
    await block.locator("summary").click()
    await expect(block).to_contain_text("add two and two")
    await page.reload()
    answer = articles(page, "assistant").last
    await expect(answer.locator("details.reasoning")).to_be_visible()
    await answer.locator("details.reasoning summary").click()
    await expect(answer.locator("details.reasoning")).to_contain_text("add two and two")
    # The answer's own text does not hold the reasoning.
    history = await web.history(user, session["id"])
    assert (history[1]["content"], history[1]["reasoning"]) == ("The answer is four.", "add two and two")


async def test_an_attached_image_is_previewed_and_reaches_the_model(web: Web, user: TestUser) -> None:
    session = await web.create_session(user)
    page = await web.new_page()
    await web.sign_in(page, user, f"/s/{session['id']}")
    await attach(page, {"name": "dot.png", "mimeType": "image/png", "buffer": png(8, 8)})
    await expect(page.get_by_text("· ready")).to_be_visible()
    await expect(page.locator(".attachments img")).to_have_count(1)  # the preview
    web.fake.script(say("A red dot."))
    await send(page, "What is in the picture?")
    await expect(articles(page, "assistant").last).to_contain_text("A red dot.")
    user_message = web.fake.requests[0].body["messages"][-1]
    kinds = [part["type"] for part in user_message["content"]]
    assert kinds == ["text", "image_url"]
    assert user_message["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
