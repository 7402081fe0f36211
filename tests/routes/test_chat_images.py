"""Images to vision models, end to end: a real upload, the real socket, the fake OpenAI server recording each
request, PostgreSQL holding Layer 1."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from PIL import Image

from tests.conftest import ServerFactory, UserFactory
from tests.fakes.openai_script import say
from tests.fakes.openai_server import FakeOpenAI
from tests.routes.chat_support import Chat, connect, new_session

APIS = ["chat_completions", "responses"]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(out, format="PNG")
    return out.getvalue()


async def upload(chat: Chat, name: str, data: bytes, content_type: str) -> str:
    async with httpx.AsyncClient(base_url=chat.base_url + "/api/v1", headers=chat.user.headers, timeout=60) as c:
        answer = await c.post(f"/sessions/{chat.session_id}/files", files={"file": (name, data, content_type)})
        assert answer.status_code == 201, answer.text
        file_id: str = answer.json()["id"]
        return file_id


def image_urls(body: dict[str, Any], api: str) -> list[str]:
    """Every image the request carries, as the URL it was sent with."""
    items = body["messages"] if api == "chat_completions" else body["input"]
    urls: list[str] = []
    for item in items:
        content = item.get("content")
        for part in content if isinstance(content, list) else []:
            if part.get("type") == "image_url":
                urls.append(part["image_url"]["url"])
            elif part.get("type") == "input_image":
                urls.append(part["image_url"])
    return urls


def size_of(url: str) -> tuple[int, int]:
    assert url.startswith("data:image/")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
        return image.size


@pytest.mark.parametrize("api", APIS)
async def test_an_image_reaches_the_model_downscaled_and_layer1_keeps_a_reference(
    api: str, fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, db: asyncpg.Connection
) -> None:
    server = await server_factory(openai_base_url=fake.base_url, models="gpt-4.1-mini:1000000", llm_api=api)
    user = await user_factory(server)
    chat = Chat.on(server, user, await new_session(server, user))
    original = png(3000, 1000)
    file_id = await upload(chat, "red.png", original, "image/png")
    fake.script(say("A red rectangle."), say("Still red."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "What is this?", "file_ids": [file_id]})
        assert (await sock.until("assistant_end"))[-1]["finish_reason"] == "stop"
        await sock.send({"type": "message", "content": "And its colour?"})
        await sock.until("assistant_end")
    first, second = fake.requests[-2].body, fake.requests[-1].body
    [sent] = image_urls(first, api)
    assert size_of(sent) == (2048, 683)  # downscaled to the provider's limit, aspect kept
    # The next turn sends the image again (it is still in the context), from the file.
    assert image_urls(second, api) == [sent]
    # Layer 1 holds a reference to the file, never its bytes; the upload itself is kept as it came.
    stored = await db.fetch("SELECT item FROM llm_context WHERE session_id = $1", chat.session_id)
    rows = [str(r["item"]) for r in stored]
    assert any(f"chinwag-file:{file_id}" in row for row in rows)
    assert not any("base64" in row for row in rows)
    async with httpx.AsyncClient(base_url=chat.base_url + "/api/v1", headers=chat.user.headers, timeout=60) as c:
        assert (await c.get(f"/sessions/{chat.session_id}/files/{file_id}/content")).content == original
        context = (await c.get(f"/sessions/{chat.session_id}/context")).json()
        # The image counts toward the context's tokens.
        assert context["tokens"] > 765


async def test_a_model_without_vision_refuses_an_image_with_bad_request(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, db: asyncpg.Connection
) -> None:
    server = await server_factory(openai_base_url=fake.base_url, models="local-text-model:32768")
    user = await user_factory(server)
    chat = Chat.on(server, user, await new_session(server, user))
    file_id = await upload(chat, "red.png", png(64, 64), "image/png")
    text_id = await upload(chat, "notes.txt", b"plain notes\n", "text/plain")
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "Look", "file_ids": [text_id, file_id]})
        refused = await sock.recv()
        assert (refused["type"], refused["code"]) == ("error", "bad_request")
        assert "local-text-model" in refused["message"]
        assert "red.png" in refused["message"]
        await sock.ping()  # the socket stays usable
        fake.script(say("Read it."))
        await sock.send({"type": "message", "content": "Just the notes", "file_ids": [text_id]})
        assert (await sock.until("assistant_end"))[-1]["finish_reason"] == "stop"
    assert [m["content"] for m in await chat.history()] == ["Just the notes", "Read it."]
    async with httpx.AsyncClient(base_url=chat.base_url + "/api/v1", headers=chat.user.headers, timeout=60) as c:
        models = (await c.get("/config")).json()["models"]
    assert [(m["id"], m["vision"]) for m in models] == [("local-text-model", False)]


async def test_a_model_configured_with_vision_gets_the_image(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    server = await server_factory(openai_base_url=fake.base_url, models="llava:7b:8192:vision")
    user = await user_factory(server)
    chat = Chat.on(server, user, await new_session(server, user))
    file_id = await upload(chat, "small.png", png(40, 30), "image/png")
    fake.script(say("Tiny."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "See?", "file_ids": [file_id]})
        await sock.until("assistant_end")
    [sent] = image_urls(fake.requests[-1].body, "chat_completions")
    assert size_of(sent) == (40, 30)  # small images go as they are
