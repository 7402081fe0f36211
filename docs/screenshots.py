"""Screenshots of the browser client for the docs: `.venv/bin/python docs/screenshots.py`.

Starts a chinwag server on a loopback port with the scripted fake model (tests/fakes) and the fake MCP server,
seeds a few chats, has one answer stream with Markdown, code and a tool call through the real client, then writes
`docs/screenshots/web-{light,dark}-{desktop,phone}.png` (1280x800 and 390x844) with Debian's Chromium.

The database: `CHINWAG_TEST_DATABASE_URL` (a throw-away database is created on that server and dropped after), else
an embedded PostgreSQL in a temporary folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
from playwright.async_api import Page, async_playwright, expect  # noqa: E402

from chinwag.config import Settings  # noqa: E402
from chinwag.db.embedded import embedded_postgres  # noqa: E402
from chinwag.main import create_app  # noqa: E402
from tests.conftest import serve  # noqa: E402
from tests.fakes.openai_script import call, say  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI  # noqa: E402
from tests.mcp.support import fake_stdio  # noqa: E402
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
EMAIL, PASSWORD = "ada@example.com", "analytical engine"
QUESTION = "Read people.csv and tell me the average age, with the code you'd use."
ANSWER = """The file has **3 people**; their average age is **36.3** years.

```python
import csv
from statistics import mean

with open("people.csv", newline="") as f:
    ages = [int(row["age"]) for row in csv.DictReader(f)]

print(round(mean(ages), 1))  # 36.3
```

| name | age |
| --- | --- |
| Ada | 36 |
| Grace | 45 |
| Alan | 28 |

Want me to group them by decade next?"""
OTHER_CHATS = ["Trip to Lisbon: a 3-day plan", "Explain Raft like I'm five", "SQL window functions cheat sheet"]


@contextlib.asynccontextmanager
async def database() -> AsyncIterator[str]:
    server = os.environ.get("CHINWAG_TEST_DATABASE_URL")
    if not server:
        with tempfile.TemporaryDirectory() as tmp:
            async with embedded_postgres(Path(tmp)) as dsn:
                yield dsn
        return
    name = f"chinwag_shots_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        yield server.rsplit("/", 1)[0] + "/" + name
    finally:
        admin = await asyncpg.connect(server)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def seed(base: str) -> str:
    """The user and some chats; answers the id of the chat to show."""
    async with httpx.AsyncClient(base_url=base + "/api/v1", timeout=30) as c:
        assert (
            await c.post("/auth/register", json={"email": EMAIL, "password": PASSWORD, "display_name": "Ada"})
        ).status_code == 201
        token = (await c.post("/auth/login", json={"email": EMAIL, "password": PASSWORD})).json()["access_token"]
        c.headers["Authorization"] = f"Bearer {token}"
        for title in OTHER_CHATS:
            await c.post("/sessions", json={"title": title})
        pinned = (await c.post("/sessions", json={"title": "Weekly notes"})).json()
        await c.patch(f"/sessions/{pinned['id']}", json={"pinned": True})
        chat = (await c.post("/sessions", json={"title": "Average age from a CSV"})).json()
        people = b"name,age\nAda,36\nGrace,45\nAlan,28\n"
        answer = await c.post(f"/sessions/{chat['id']}/files", files={"file": ("people.csv", people, "text/csv")})
        assert answer.status_code == 201, answer.text
        return str(chat["id"])


async def chat_through_the_client(page: Page, base: str, chat_id: str, fake: FakeOpenAI) -> None:
    await page.goto(f"{base}/s/{chat_id}")
    await page.get_by_role("textbox", name="Email").fill(EMAIL)
    await page.get_by_role("textbox", name="Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    fake.script(
        call("echo", {"text": "name,age\nAda,36\nGrace,45\nAlan,28"}, text="Let me look at the file first.\n\n"),
        say(ANSWER, delay=0.005),
    )
    await page.get_by_role("textbox", name="Message").fill(QUESTION)
    await page.get_by_role("button", name="Send").click()
    await expect(page.get_by_text("Want me to group them")).to_be_visible(timeout=30_000)
    await expect(page.get_by_role("button", name="Send")).to_be_visible()


async def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        mcp = Path(tmp) / "mcp.json"
        mcp.write_text(json.dumps({"mcpServers": {"files-helper": fake_stdio(pool_size=1)}}))
        async with database() as dsn, FakeOpenAI.start(default=say("Average age from a CSV")) as fake:
            settings = Settings(
                _env_file=None,
                database_url=dsn,
                data_dir=Path(tmp) / "data",
                secret_key="screenshots-" + "x" * 40,
                registration="open",
                openai_base_url=fake.base_url,
                models="gpt-4.1-mini:1047576,gpt-4o-mini:128000",
                mcp_config=mcp,
            )
            async with serve(create_app(settings)) as server:
                chat_id = await seed(server.url)
                async with async_playwright() as pw:
                    browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
                    context = await browser.new_context(viewport={"width": 1280, "height": 800}, device_scale_factor=1)
                    page = await context.new_page()
                    await chat_through_the_client(page, server.url, chat_id, fake)
                    await page.get_by_role("group", name="echo").locator("summary").click()
                    schemes: tuple[Literal["light"], Literal["dark"]] = ("light", "dark")
                    for scheme in schemes:
                        await page.emulate_media(color_scheme=scheme)
                        await page.set_viewport_size({"width": 1280, "height": 800})
                        await page.wait_for_timeout(300)  # let the layout settle before the picture
                        await page.screenshot(path=str(OUT / f"web-{scheme}-desktop.png"))
                        await page.set_viewport_size({"width": 390, "height": 844})
                        await page.wait_for_timeout(300)
                        await page.screenshot(path=str(OUT / f"web-{scheme}-phone.png"))
                    await browser.close()
    for png in sorted(OUT.glob("*.png")):
        print(png.relative_to(ROOT))


if __name__ == "__main__":
    asyncio.run(main())
