"""What real model servers need of chinwag, checked against the fake (which refuses what llama.cpp refuses).

Found against a real llama.cpp server: an interrupted answer stored without its item type bricked a Responses API
session; a cut answer looked finished; titles were paragraphs; interrupted runs recorded no usage.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from tests.conftest import STOCK_TOO, RunningServer, ServerFactory, TestUser, UserFactory
from tests.fakes.openai_script import fail, say
from tests.fakes.openai_server import FakeOpenAI
from tests.routes.chat_support import Chat, connect, new_session, text_of


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


async def chat_on(fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, **settings: Any) -> Chat:
    settings.setdefault("models", "gpt-4.1-mini:1000000")
    server = await server_factory(openai_base_url=fake.base_url, **settings)
    user = await user_factory(server)
    return Chat.on(server, user, await new_session(server, user))


async def untitled_session(server: RunningServer, user: TestUser) -> str:
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", headers=user.headers, timeout=60) as c:
        answer = await c.post("/sessions", json={})
        assert answer.status_code == 201, answer.text
        session_id: str = answer.json()["id"]
        return session_id


def input_items(fake: FakeOpenAI, index: int) -> list[dict[str, Any]]:
    items = fake.requests[index].body["input"]
    assert isinstance(items, list)
    return items


@STOCK_TOO
async def test_an_interrupt_on_the_responses_api_leaves_a_history_the_server_accepts(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    chat = await chat_on(fake, server_factory, user_factory, llm_api="responses")
    fake.script(say(" ".join(f"t{i}" for i in range(200)), delay=0.02), say("Next answer."), say("Third."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "go on and on"})
        await sock.until("text_delta")
        await sock.send({"type": "interrupt"})
        first = await sock.until("assistant_end")
        assert first[-1]["finish_reason"] == "interrupted"
        for content in ("again", "and again"):
            await sock.send({"type": "message", "content": content})
            frames = await sock.until("assistant_end")
            assert frames[-1]["finish_reason"] == "stop", frames
    # Every later request carries the partial answer in the typed shape, and every item says what it is.
    for index in (1, 2):
        items = input_items(fake, index)
        partial = [i for i in items if i.get("role") == "assistant" and str(i.get("content", "")).startswith("t0")]
        assert partial == [{"type": "message", "role": "assistant", "content": partial[0]["content"]}]
        assert all(i.get("type") or i.get("role") == "user" for i in items), items


async def test_a_history_stored_in_the_untyped_form_is_sent_typed(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, db: asyncpg.Connection
) -> None:
    """Sessions written before the fix (an untyped assistant item in Layer 1) take new turns again."""
    chat = await chat_on(fake, server_factory, user_factory, llm_api="responses")
    session = uuid.UUID(chat.session_id)
    for seq, (role, status) in enumerate((("user", "complete"), ("assistant", "interrupted")), start=1):
        await db.execute(
            "INSERT INTO messages (session_id, seq, role, content, status) VALUES ($1, $2, $3, $4, $5)",
            session,
            seq,
            role,
            "earlier",
            status,
        )
    await db.execute("UPDATE sessions SET message_count = 2 WHERE id = $1", session)
    for item in ({"role": "user", "content": "earlier"}, {"role": "assistant", "content": "half an"}):
        await db.execute(
            "INSERT INTO llm_context (session_id, item, tokens, turn_seq) VALUES ($1, $2::jsonb, 3, 1)",
            session,
            orjson.dumps(item).decode(),
        )
    fake.script(say("Works again."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "hello"})
        frames = await sock.until("assistant_end")
    assert frames[-1]["finish_reason"] == "stop"
    assert {"type": "message", "role": "assistant", "content": "half an"} in input_items(fake, 0)


async def test_a_rejected_history_is_rewritten_once_and_the_turn_goes_on(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    """A provider that refuses the replayed history (400 before anything streamed) gets it once more as plain
    text messages; the answer arrives and the session is not stuck on its own history."""
    chat = await chat_on(fake, server_factory, user_factory)
    fake.script(say("First."), fail(400, message="Invalid 'input[1]': unknown item shape"), say("Recovered."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "one"})
        await sock.until("assistant_end")
        await sock.send({"type": "message", "content": "two"})
        frames = await sock.until("assistant_end")
    assert frames[-1]["finish_reason"] == "stop"
    assert text_of(frames) == "Recovered."
    retried = fake.requests[2].body["messages"]
    assert [(m["role"], m["content"]) for m in retried if m["role"] != "system"] == [
        ("user", "one"),
        ("assistant", "First."),
        ("user", "two"),
    ]
    history = await chat.history()
    assert [m["content"] for m in history] == ["one", "First.", "two", "Recovered."]


async def test_a_rejected_first_turn_is_not_retried(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    chat = await chat_on(fake, server_factory, user_factory)
    fake.script(fail(400, message="model not found"))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "one"})
        frames = await sock.until("assistant_end")
    assert frames[-1]["finish_reason"] == "error"
    error = next(f for f in frames if f["type"] == "error")
    assert "model not found" in error["message"]
    assert len(fake.requests) == 1


@STOCK_TOO
async def test_the_output_cap_is_sent_and_a_cut_answer_ends_with_length(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    chat = await chat_on(fake, server_factory, user_factory, max_output_tokens=5)
    fake.script(say("one two three four five", finish_reason="length"), say("Short."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "talk a lot"})
        frames = await sock.until("assistant_end")
        assert frames[-1]["finish_reason"] == "length"
        await sock.send({"type": "message", "content": "and now?"})
        await sock.until("assistant_end")
    assert fake.requests[0].body["max_tokens"] == 5
    history = await chat.history()
    assert history[1]["finish_reason"] == "length"
    assert history[1]["content"] == "one two three four five"
    # The cut answer stays in the model's context.
    said = [m.get("content") for m in fake.requests[1].body["messages"] if m["role"] == "assistant"]
    assert said == ["one two three four five"]


@STOCK_TOO
async def test_a_cut_answer_on_the_responses_api_ends_with_length(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    chat = await chat_on(fake, server_factory, user_factory, llm_api="responses", max_output_tokens=5)
    fake.script(say("one two three four five", finish_reason="length"))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "talk a lot"})
        frames = await sock.until("assistant_end")
    assert frames[-1]["finish_reason"] == "length"
    assert fake.requests[0].body["max_output_tokens"] == 5
    assert text_of(frames) == "one two three four five"


async def test_the_cap_never_asks_for_more_than_the_window_leaves(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    chat = await chat_on(fake, server_factory, user_factory, models="small:3000", max_output_tokens=100_000)
    fake.script(say("Fine."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "hello"})
        await sock.until("assistant_end")
    cap = fake.requests[0].body["max_tokens"]
    assert 0 < cap < 3000


async def test_an_interrupted_run_records_what_was_streamed_as_usage(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    chat = await chat_on(fake, server_factory, user_factory)
    fake.script(say(" ".join(f"word{i}" for i in range(300)), delay=0.02))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "go on and on"})
        for _ in range(20):
            await sock.recv()
        await sock.send({"type": "interrupt"})
        frames = await sock.until("assistant_end")
    end = frames[-1]
    assert end["finish_reason"] == "interrupted"
    assert end["usage"]["input_tokens"] > 0
    assert end["usage"]["output_tokens"] > 0
    history = await chat.history()
    assert history[1]["usage"] == end["usage"]
    session = await chat.session()
    assert session["usage"] == end["usage"]


@pytest.mark.parametrize(
    ("raw", "title"),
    [
        ('"Paris trip planning."', "Paris trip planning"),
        ("Title: Weather in Oslo!\n\nThe user asked about the weather and then", "Weather in Oslo"),
        (
            "**A very long title that goes on and on well past what fits in a sidebar**",
            "A very long title that goes on and…",
        ),
    ],
)
async def test_titles_are_short_clean_lines(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, raw: str, title: str
) -> None:
    server = await server_factory(openai_base_url=fake.base_url, models="gpt-4.1-mini:1000000")
    user = await user_factory(server)
    chat = Chat.on(server, user, await untitled_session(server, user))
    fake.script(say("Sure."), say(raw))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "plan my trip"})
        await sock.until("session_updated", timeout=20)
    got = (await chat.session())["title"]
    assert got == title
    assert fake.requests[1].body["max_tokens"] <= 32


async def test_a_failed_title_names_the_session_from_the_first_message(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    server = await server_factory(openai_base_url=fake.base_url, models="gpt-4.1-mini:1000000")
    user = await user_factory(server)
    chat = Chat.on(server, user, await untitled_session(server, user))
    fake.script(say("Sure."), fail(500, message="title model down"))
    async with connect(chat) as sock:
        await sock.send(
            {"type": "message", "content": "How do I   bake sourdough bread at home without a starter kit?"}
        )
        await sock.until("session_updated", timeout=30)
    assert (await chat.session())["title"] == "How do I bake sourdough bread at home…"


async def test_a_provider_400_is_logged_once_with_its_message(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, caplog: pytest.LogCaptureFixture
) -> None:
    chat = await chat_on(fake, server_factory, user_factory)
    fake.script(fail(400, message="context too long for this model"))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "one"})
        await sock.until("assistant_end")
    await asyncio.sleep(0.1)
    lines = [r for r in caplog.records if "context too long" in r.getMessage() or r.name.startswith("openai.agents")]
    assert len([r for r in lines if r.levelname in ("WARNING", "ERROR")]) == 1, [r.getMessage() for r in lines]
