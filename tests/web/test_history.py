"""Long histories: older pages load on scroll-up, in order, without duplicates or a jump; a search hit opens the
chat at that message; the sidebar lists chats pinned first, with rename, pin and delete."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from chinwag.services.session_service import SessionService
from tests.conftest import TestUser
from tests.web.conftest import Web, conversation


async def seed(
    web: Web, user: TestUser, count: int, *, title: str = "Long chat", special: dict[int, str] | None = None
) -> dict[str, Any]:
    """A session with `count` messages (user and assistant in turn), written through the service, not the model."""
    session = await web.create_session(user, title)
    service = SessionService(web.server.app.state.pool, web.server.app.state.settings)
    for seq in range(1, count + 1):
        text = (special or {}).get(seq, f"message number {seq:03d}")
        await service.append_message(session_id=session["id"], role="user" if seq % 2 else "assistant", content=text)
    return session


async def test_scrolling_up_loads_120_messages_in_order_without_duplicates(web: Web, user: TestUser) -> None:
    session = await seed(web, user, 120)
    page = await web.new_page()
    await web.sign_in(page, user, f"/s/{session['id']}")
    region = conversation(page)
    all_articles = region.get_by_role("article")
    await expect(all_articles.last).to_have_attribute("data-seq", "120")
    await expect(all_articles).to_have_count(50)
    for expected, top_seq in ((100, 71), (120, 21)):
        await region.evaluate("el => { el.scrollTop = 0 }")
        await expect(all_articles).to_have_count(expected)
        # No jump: the message that was at the top is still in view after the older page went in above it.
        await expect(region.locator(f"article[data-seq='{top_seq}']")).to_be_in_viewport()
    seqs = await all_articles.evaluate_all("els => els.map(e => Number(e.dataset.seq))")
    assert seqs == list(range(1, 121))
    texts = await region.locator("article .msg-text, article .md:not(.reasoning-text)").all_inner_texts()
    assert texts == [f"message number {seq:03d}" for seq in range(1, 121)]


async def test_a_search_hit_opens_the_chat_at_that_message(web: Web, user: TestUser) -> None:
    session = await seed(web, user, 120, title="Zoo chat", special={11: "the zebra crossed at noon"})
    await web.create_session(user, "Other chat")
    page = await web.new_page()
    await web.sign_in(page, user)
    await page.get_by_role("searchbox", name="Search chats").fill("zebra")
    hits = page.get_by_role("region", name="Search results")
    hit = hits.get_by_role("button").filter(has_text="zebra crossed")
    await expect(hit).to_contain_text("Zoo chat")
    await hit.click()
    target = conversation(page).locator("article[data-seq='11']")
    await expect(target).to_contain_text("the zebra crossed at noon")
    await expect(target).to_be_in_viewport()
    assert page.url.endswith(f"/s/{session['id']}")
    # The page around it: older and newer messages load by scrolling either way.
    await conversation(page).evaluate("el => { el.scrollTop = el.scrollHeight }")
    await expect(conversation(page).locator("article[data-seq='60']")).to_be_attached()
    await conversation(page).evaluate("el => { el.scrollTop = el.scrollHeight }")
    await expect(conversation(page).get_by_role("article").last).to_have_attribute("data-seq", "120")
    await conversation(page).evaluate("el => { el.scrollTop = 0 }")
    await expect(conversation(page).get_by_role("article").first).to_have_attribute("data-seq", "1")
    seqs = await conversation(page).get_by_role("article").evaluate_all("els => els.map(e => Number(e.dataset.seq))")
    assert seqs == list(range(1, 121))


async def test_the_sidebar_renames_pins_and_deletes_chats(web: Web, user: TestUser) -> None:
    for title in ("Alpha", "Beta", "Gamma"):
        await web.create_session(user, title)
    page = await web.new_page()
    await web.sign_in(page, user)
    chats = page.get_by_role("navigation", name="Chats")
    await expect(chats.get_by_role("link")).to_have_text(["Gamma", "Beta", "Alpha"])  # most recent first

    await chats.get_by_role("button", name="Pin Alpha").click()
    await expect(chats.get_by_role("link")).to_have_text(["Alpha", "Gamma", "Beta"])  # pinned first

    await chats.get_by_role("button", name="Rename Beta").click()
    dialog = page.get_by_role("dialog", name="Rename chat")
    await dialog.get_by_role("textbox", name="Title").fill("Beta renamed")
    await dialog.get_by_role("button", name="Rename").click()
    await expect(chats.get_by_role("link", name="Beta renamed")).to_be_visible()

    await chats.get_by_role("link", name="Gamma").click()
    await expect(page.get_by_role("heading", name="Gamma")).to_be_visible()
    await chats.get_by_role("button", name="Delete Gamma").click()
    await page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    await expect(chats.get_by_role("link")).to_have_text(["Alpha", "Beta renamed"])
    await expect(page.get_by_role("heading", name="New chat")).to_be_visible()
    async with web.api(user) as c:
        listed = (await c.get("/sessions")).json()["items"]
    assert [(s["title"], s["pinned"]) for s in listed] == [("Alpha", True), ("Beta renamed", False)]


async def test_the_sidebar_loads_more_chats_as_it_scrolls(web: Web, user: TestUser) -> None:
    for i in range(45):
        await web.create_session(user, f"Chat {i:02d}")
    page = await web.new_page()
    await web.sign_in(page, user)
    chats = page.get_by_role("navigation", name="Chats")
    await expect(chats.get_by_role("link").first).to_have_text("Chat 44")
    await chats.evaluate("el => { el.scrollTop = el.scrollHeight }")
    await expect(chats.get_by_role("link")).to_have_count(45)
    names = await chats.get_by_role("link").all_inner_texts()
    assert names == [f"Chat {i:02d}" for i in range(44, -1, -1)]
