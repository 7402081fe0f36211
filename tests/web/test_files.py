"""Files: attach by the button or by dropping, upload progress to ready, image previews, the session's files with
delete, the text reaching the model; a file too large (413) or of a refused type (415) explained in an alert."""

from __future__ import annotations

import json
import struct
import zlib

from playwright.async_api import FilePayload, Page, expect

from tests.conftest import TestUser, UserFactory
from tests.fakes.openai_script import say
from tests.web.conftest import Web, WebFactory, articles, body, conversation, send


async def attach(page: Page, *files: FilePayload) -> None:
    async with page.expect_file_chooser() as chooser:
        await page.get_by_role("button", name="Attach file").click()
    await (await chooser.value).set_files(list(files))


def png(width: int = 2, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


async def test_an_attached_file_reaches_the_model_and_can_be_deleted(web: Web, user: TestUser) -> None:
    session = await web.create_session(user)
    page = await web.new_page()
    await web.sign_in(page, user, f"/s/{session['id']}")
    sent: list[dict[str, object]] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(json.loads(payload))))
    await page.reload()  # so that the socket opens with the listener in place
    await expect(page.get_by_text("Connecting…")).to_have_count(0)
    notes = b"# Notes\n\nThe secret phrase is purple-otter.\n"
    await attach(page, {"name": "notes.md", "mimeType": "text/markdown", "buffer": notes})
    await expect(page.get_by_text("notes.md").first).to_be_visible()
    await expect(page.get_by_text("· ready")).to_be_visible()
    web.fake.script(say("It is purple-otter."))
    await send(page, "What is the secret phrase?")
    await expect(body(articles(page, "assistant").last)).to_have_text("It is purple-otter.")
    request = next(r for r in web.fake.requests if r.last_user_text == "What is the secret phrase?")
    assert "purple-otter" in json.dumps(request.body)
    async with web.api(user) as c:
        uploaded = (await c.get(f"/sessions/{session['id']}/files")).json()["items"]
    messages = [f for f in sent if f.get("type") == "message"]
    assert [(m["content"], m["file_ids"]) for m in messages] == [("What is the secret phrase?", [uploaded[0]["id"]])]

    # Dropped files are attached too.
    drop = await page.evaluate_handle(
        "() => { const dt = new DataTransfer();"
        " dt.items.add(new File(['dropped words'], 'dropped.txt', {type: 'text/plain'})); return dt; }"
    )
    await conversation(page).dispatch_event("drop", {"dataTransfer": drop})
    await expect(page.get_by_text("· ready")).to_be_visible()

    files = page.locator("details.files")
    await expect(files.locator("summary")).to_have_text("Files in this chat (2)")
    await files.locator("summary").click()
    await files.get_by_role("button", name="Delete file notes.md").click()
    await expect(files.locator("summary")).to_have_text("Files in this chat (1)")
    async with web.api(user) as c:
        names = [f["name"] for f in (await c.get(f"/sessions/{session['id']}/files")).json()["items"]]
    assert names == ["dropped.txt"]


async def test_an_image_is_previewed_before_it_is_sent(web: Web, user: TestUser) -> None:
    session = await web.create_session(user)
    page = await web.new_page()
    await web.sign_in(page, user, f"/s/{session['id']}")
    await attach(page, {"name": "dot.png", "mimeType": "image/png", "buffer": png()})
    preview = page.get_by_role("img", name="Preview of dot.png")
    await expect(preview).to_be_visible()
    assert await preview.evaluate("img => img.complete && img.naturalWidth") == 2
    await expect(page.get_by_text("· ready")).to_be_visible()
    await page.get_by_role("button", name="Remove dot.png").click()
    await expect(preview).to_have_count(0)


async def test_a_file_too_large_or_of_a_refused_type_is_explained(
    web_factory: WebFactory, user_factory: UserFactory
) -> None:
    web = await web_factory(max_upload_bytes=1024)
    user = await user_factory(web.server)
    session = await web.create_session(user)
    page = await web.new_page()
    await web.sign_in(page, user, f"/s/{session['id']}")
    statuses: list[int] = []
    page.on(
        "response",
        lambda r: statuses.append(r.status) if r.url.endswith("/files") and r.request.method == "POST" else None,
    )

    await attach(page, {"name": "big.txt", "mimeType": "text/plain", "buffer": b"word " * 1000})
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("big.txt is too large to upload (the limit is 1.0 KB).")
    await alert.get_by_role("button", name="Dismiss error").click()

    await attach(page, {"name": "blob.bin", "mimeType": "application/octet-stream", "buffer": bytes(range(256)) * 2})
    await expect(alert).to_contain_text("blob.bin cannot be attached: this type of file is not accepted")
    assert statuses == [413, 415]
    await expect(page.get_by_text("· ready")).to_have_count(0)
    async with web.api(user) as c:
        assert (await c.get(f"/sessions/{session['id']}/files")).json()["items"] == []
