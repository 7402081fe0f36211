"""A stream that survives a page refresh, a dropped connection and a second tab, with nothing lost or doubled;
a message sent while offline goes once when the connection is back."""

from __future__ import annotations

import asyncio

from playwright.async_api import Page, expect

from tests.conftest import TestUser, UserFactory
from tests.fakes.openai_script import say
from tests.web.conftest import Web, WebFactory, articles, body, send, words

LONG = words(80)


async def final_answer_matches_history(web: Web, page: Page, user: TestUser, session_id: str) -> None:
    """The page shows exactly one user message and one answer, the answer's text equal to the stored one."""
    await expect(body(articles(page, "assistant").last)).to_contain_text("w79", timeout=40_000)
    await expect(page.get_by_role("button", name="Send")).to_be_visible()
    history = await web.history(user, session_id)
    assert [(m["seq"], m["role"], m["status"]) for m in history] == [
        (1, "user", "complete"),
        (2, "assistant", "complete"),
    ]
    assert history[1]["content"] == LONG
    await expect(articles(page, "user")).to_have_count(1)
    await expect(articles(page, "assistant")).to_have_count(1)
    await expect(body(articles(page, "assistant"))).to_have_text(LONG)
    await expect(articles(page, "assistant")).to_have_attribute("data-seq", "2")


async def test_a_refresh_mid_answer_shows_the_text_so_far_and_continues_live(web: Web, user: TestUser) -> None:
    session = await web.create_session(user)
    page = await web.new_page()
    await web.sign_in(page, user, f"/s/{session['id']}")
    web.fake.script(say(LONG, delay=0.06))
    await send(page, "a long answer please")
    await expect(articles(page, "assistant")).to_contain_text("w12 ")
    await page.reload()
    # Right after the reload the answer is still streaming (the server has checkpointed part of it): the page
    # rebuilds it from the run's events, not from that checkpoint, so nothing is doubled.
    await expect(page.get_by_role("button", name="Stop")).to_be_visible()
    await expect(articles(page, "assistant")).to_contain_text("w20 ")
    await final_answer_matches_history(web, page, user, session["id"])


async def test_a_dropped_connection_resumes_the_answer_with_nothing_doubled(
    web_factory: WebFactory, user_factory: UserFactory
) -> None:
    web = await web_factory(proxy=True)
    assert web.proxy is not None
    user = await user_factory(web.server)
    session = await web.create_session(user)
    page = await web.new_page()
    await web.sign_in(page, user, f"/s/{session['id']}")
    web.fake.script(say(LONG, delay=0.06))
    await send(page, "a long answer please")
    answer = articles(page, "assistant")
    await expect(answer).to_contain_text("w10 ")
    # The network goes: every connection cut, new ones refused until it is back.
    web.proxy.refusing = True
    web.proxy.drop()
    await expect(page.get_by_text("Reconnecting…")).to_be_visible()
    seen = await body(answer).inner_text()
    # Events go on meanwhile: wait until the server's checkpoint is past what the page had when the network went.
    async with asyncio.timeout(30):
        while len((await web.history(user, session["id"]))[1]["content"]) <= len(seen):
            await asyncio.sleep(0.2)
    web.proxy.refusing = False
    await expect(page.get_by_text("Reconnecting…")).to_have_count(0)
    await final_answer_matches_history(web, page, user, session["id"])
    assert LONG.startswith(seen.rstrip())


async def test_two_tabs_show_the_same_stream(web: Web, user: TestUser) -> None:
    session = await web.create_session(user)
    first = await web.new_page()
    await web.sign_in(first, user, f"/s/{session['id']}")
    second = await web.new_page()
    await second.goto(web.base_url + f"/s/{session['id']}")
    await expect(second.get_by_role("textbox", name="Message")).to_be_visible()
    await expect(second.get_by_text("Connecting…")).to_have_count(0)
    web.fake.script(say(LONG, delay=0.04))
    await send(first, "shared answer please")
    # The other tab sees the user's message and the answer as it streams, and can stop... or just watch it end.
    await expect(articles(second, "user")).to_contain_text("shared answer please")
    await expect(second.get_by_role("button", name="Stop")).to_be_visible()
    for page in (first, second):
        await final_answer_matches_history(web, page, user, session["id"])


async def test_a_message_sent_offline_waits_and_goes_once(web_factory: WebFactory, user_factory: UserFactory) -> None:
    web = await web_factory(proxy=True)
    assert web.proxy is not None
    user = await user_factory(web.server)
    session = await web.create_session(user)
    page = await web.new_page()
    await web.sign_in(page, user, f"/s/{session['id']}")
    await expect(page.get_by_text("Connecting…")).to_have_count(0)
    web.proxy.refusing = True
    web.proxy.drop()
    await expect(page.get_by_text("Reconnecting…")).to_be_visible()
    web.fake.script(say(LONG))
    await send(page, "sent while offline")
    await expect(articles(page, "user")).to_contain_text("Sending…")
    web.proxy.refusing = False
    await final_answer_matches_history(web, page, user, session["id"])
    chat_requests = [r for r in web.fake.requests if r.last_user_text == "sent while offline"]
    assert len(chat_requests) == 1
