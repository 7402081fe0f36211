"""Browser tests: Playwright (async API, in the suite's session loop) driving Debian's Chromium, headless.

Playwright's own browser download is never used: the browser is `/usr/bin/chromium` (`make test` installs it with
apt-get when it can). Without it these tests fail under `CHINWAG_REQUIRE_SERVICES=1` and are skipped otherwise.
Each test gets a real chinwag server (real uvicorn, real PostgreSQL) whose model is the scripted fake, and a fresh
browser context (its own localStorage). Pages are driven by role and accessible name only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Locator, Page, async_playwright, expect

from tests.conftest import REQUIRE_SERVICES, RunningServer, ServerFactory, TestUser, UserFactory, free_port
from tests.fakes.openai_script import say
from tests.fakes.openai_server import FakeOpenAI

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
TITLE = "Scripted chat title"
MODELS = "gpt-4.1-mini:1000000,gpt-4o-mini:128000"

expect.set_options(timeout=20_000)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        reason = f"{CHROMIUM} is missing: install Debian's chromium (make test does it with apt-get as root)"
        if REQUIRE_SERVICES:
            pytest.fail(reason)
        pytest.skip(reason)
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Web:
    """A chinwag server, its fake model, and a browser context pointed at it."""

    server: RunningServer
    fake: FakeOpenAI
    context: BrowserContext
    base_url: str
    proxy: TcpProxy | None = None
    errors: list[str] = field(default_factory=list)

    async def new_page(self) -> Page:
        page = await self.context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: (
                self.errors.append(f"console: {msg.text}")
                if msg.type == "error" and "Content Security Policy" in msg.text
                else None
            ),
        )
        return page

    async def sign_in(self, page: Page, user: TestUser, path: str = "/") -> None:
        """Sign in through the form (the tokens then live in this context's localStorage)."""
        await page.goto(self.base_url + path)
        await page.get_by_role("textbox", name="Email").fill(user.email)
        await page.get_by_role("textbox", name="Password").fill(user.password)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("textbox", name="Message")).to_be_visible()

    def api(self, user: TestUser) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.server.url + "/api/v1", headers=user.headers, timeout=30)

    async def create_session(self, user: TestUser, title: str = "Test chat") -> dict[str, Any]:
        async with self.api(user) as c:
            answer = await c.post("/sessions", json={"title": title})
            assert answer.status_code == 201, answer.text
            session: dict[str, Any] = answer.json()
            return session

    async def history(self, user: TestUser, session_id: str) -> list[dict[str, Any]]:
        """Every message of the session over REST, oldest first."""
        items: list[dict[str, Any]] = []
        after = 0
        async with self.api(user) as c:
            while True:
                page = (await c.get(f"/sessions/{session_id}/messages", params={"after": after, "limit": 100})).json()
                items += page["items"]
                if not page["has_more"]:
                    return items
                after = items[-1]["seq"]


WebFactory = Callable[..., Awaitable[Web]]


@pytest.fixture
async def web_factory(browser: Browser, server_factory: ServerFactory, tmp_path: Path) -> AsyncIterator[WebFactory]:
    """`await web_factory(**settings)`: a server with the fake model (titles answered by its default reply)."""
    async with contextlib.AsyncExitStack() as stack:
        made: list[Web] = []

        async def make(*, proxy: bool = False, **overrides: Any) -> Web:
            fake = await stack.enter_async_context(FakeOpenAI.start(default=say(TITLE)))
            overrides.setdefault("models", MODELS)
            server = await server_factory(openai_base_url=fake.base_url, **overrides)
            base_url = server.url
            if proxy:
                cut = await stack.enter_async_context(TcpProxy.start(server.url))
                base_url = cut.url
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            stack.push_async_callback(context.close)
            web = Web(server=server, fake=fake, context=context, base_url=base_url, proxy=cut if proxy else None)
            made.append(web)
            return web

        yield make
        for web in made:
            assert not web.errors, "\n".join(web.errors)


@pytest.fixture
async def web(web_factory: WebFactory) -> Web:
    return await web_factory()


@pytest.fixture
async def user(web: Web, user_factory: UserFactory) -> TestUser:
    return await user_factory(web.server)


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Run axe-core (vendored for the tests) on the page; the serious and critical violations."""
    # The page's CSP refuses inline scripts (as it should): serve axe from the page's own origin instead.
    await page.route(
        "**/__tests__/axe.min.js", lambda route: route.fulfill(path=str(AXE), content_type="text/javascript")
    )
    await page.add_script_tag(url="/__tests__/axe.min.js")
    result: dict[str, Any] = await page.evaluate("async () => await axe.run(document)")
    return [v for v in result["violations"] if v["impact"] in ("serious", "critical")]


def describe(violations: list[dict[str, Any]]) -> str:
    return json.dumps([{"id": v["id"], "nodes": [n["target"] for n in v["nodes"]]} for v in violations], indent=1)


class TcpProxy:
    """A loopback TCP proxy in front of the server: `drop()` cuts every connection open through it, as a broken
    network would (the browser sees its socket die mid-stream, the server a peer gone)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.url = ""
        self._writers: set[asyncio.StreamWriter] = set()
        self.refusing = False

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, target_url: str) -> AsyncIterator[TcpProxy]:
        proxy = cls(int(target_url.rsplit(":", 1)[1]))
        port = free_port()
        server = await asyncio.start_server(proxy._serve, "127.0.0.1", port)
        proxy.url = f"http://127.0.0.1:{port}"
        try:
            yield proxy
        finally:
            proxy.drop()
            server.close()
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}

    def drop(self) -> None:
        for w in list(self._writers):
            transport = w.transport
            transport.abort()
        self._writers.clear()


def conversation(page: Page) -> Locator:
    return page.get_by_role("region", name="Conversation")


def articles(page: Page, role: str) -> Locator:
    """The conversation's articles of one role (`data-role`), in order."""
    return conversation(page).get_by_role("article").and_(page.locator(f"[data-role={role}]"))


def body(article: Locator) -> Locator:
    """The rendered text of a message (its Markdown body, or a user message's text)."""
    return article.locator(".md:not(.reasoning-text), .msg-text").first


async def send(page: Page, text: str) -> None:
    await page.get_by_role("textbox", name="Message").fill(text)
    await page.get_by_role("button", name="Send").click()


def words(count: int, prefix: str = "w") -> str:
    """Plain words (no Markdown), so the rendered text equals the stored text."""
    return " ".join(f"{prefix}{i}" for i in range(count))
