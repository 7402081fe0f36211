"""`/docs` and `/redoc` in a real browser with the network cut off: everything they need comes from chinwag."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from playwright.async_api import Browser, Route, expect

from tests.conftest import RunningServer


async def test_docs_and_redoc_render_with_no_internet(browser: Browser, server: RunningServer) -> None:
    context = await browser.new_context()
    elsewhere: list[str] = []
    problems: list[str] = []
    host = urlsplit(server.url).netloc

    async def only_chinwag(route: Route) -> None:
        if urlsplit(route.request.url).netloc == host or route.request.url.startswith(("data:", "blob:")):
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort("internetdisconnected")

    await context.route("**/*", only_chinwag)
    try:
        page = await context.new_page()
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)

        await page.goto(server.url + "/docs")
        await expect(page.get_by_role("button", name=re.compile("Authorize"))).to_be_visible()
        await expect(page.locator(".opblock").first).to_be_visible()
        await expect(page.get_by_text("/api/v1/sessions/{session_id}/messages").first).to_be_visible()

        await page.goto(server.url + "/redoc")
        await expect(page.get_by_role("heading", name=re.compile("chinwag"))).to_be_visible()
        await expect(page.get_by_text("List Sessions").first).to_be_attached()
    finally:
        await context.close()
    assert elsewhere == []
    # ReDoc's sidebar names its maker with a logo from its CDN: the page's policy blocks it (nothing is fetched, as
    # `elsewhere` shows); anything else the console reports is a failure.
    assert [p for p in problems if "https://cdn.redoc.ly/" not in p] == []
