"""The end of a run is never silent: an answer too long for the search index is stored and searchable, a session
deleted mid-run ends its run first, and any failure storing the end still sends `error` and `assistant_end`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from chinwag.services.session_service import SessionService
from tests.conftest import ServerFactory, UserFactory
from tests.fakes.openai_script import say
from tests.fakes.openai_server import FakeOpenAI
from tests.routes.chat_support import Chat, connect, new_session, text_of


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


@pytest.fixture
async def chat(fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory) -> Chat:
    server = await server_factory(openai_base_url=fake.base_url, models="gpt-4.1-mini:1000000")
    user = await user_factory(server)
    return Chat.on(server, user, await new_session(server, user))


async def test_an_answer_past_the_tsvector_limit_is_stored_and_searchable(
    chat: Chat, fake: FakeOpenAI, db: asyncpg.Connection
) -> None:
    # ~1 MB of distinct words: its full tsvector would pass PostgreSQL's 1 MiB limit.
    words = " ".join(f"z{i:06d}" for i in range(120_000))
    fake.script(say(words, tokens=400, delay=0.005), say("Short one."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "a very long table please"})
        frames = await sock.until("assistant_end", timeout=60)
        assert [f for f in frames if f["type"] == "error"] == []
        assert frames[-1]["finish_reason"] == "stop"
        assert text_of(frames) == words
        await sock.send({"type": "message", "content": "and now?"})
        again = await sock.until("assistant_end", timeout=30)
        assert again[-1]["finish_reason"] == "stop"
    history = await chat.history()
    assert [(m["role"], m["status"]) for m in history] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert history[1]["content"] == words
    async with httpx.AsyncClient(base_url=chat.base_url + "/api/v1", headers=chat.user.headers, timeout=60) as c:
        found = await c.get("/search", params={"q": "z000042"})
    assert found.status_code == 200, found.text
    assert [h["seq"] for h in found.json()["items"]] == [2]
    # Search still goes through the GIN index.
    async with db.transaction():
        await db.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in await db.fetch(
                "EXPLAIN SELECT id FROM messages WHERE search @@ websearch_to_tsquery('simple', 'z000042')"
            )
        )
    assert "messages_search_idx" in plan


async def test_deleting_a_session_mid_run_interrupts_the_run_first(
    chat: Chat, fake: FakeOpenAI, db: asyncpg.Connection
) -> None:
    fake.script(say(" ".join(f"w{i}" for i in range(400)), delay=0.03))
    async with connect(chat) as sock, connect(chat) as other:
        await sock.send({"type": "message", "content": "talk for a long time"})
        frames = await sock.until("assistant_start")
        while len(text_of(frames)) < 40:
            frames.append(await sock.recv())
        async with httpx.AsyncClient(base_url=chat.base_url + "/api/v1", headers=chat.user.headers, timeout=60) as c:
            deleted = await c.delete(f"/sessions/{chat.session_id}")
            assert deleted.status_code == 204, deleted.text
            assert (await c.get(f"/sessions/{chat.session_id}")).status_code == 404
        frames += await sock.until("assistant_end", timeout=15)
        seen_by_other = await other.until("assistant_end", timeout=15)
    for got in (frames, seen_by_other):
        assert got[-1]["finish_reason"] == "interrupted"
        assert [f for f in got if f["type"] == "error"] == []
    sid = uuid.UUID(chat.session_id)
    assert await db.fetchval("SELECT count(*) FROM messages WHERE session_id = $1", sid) == 0
    assert await db.fetchval("SELECT count(*) FROM runs WHERE session_id = $1", sid) == 0
    assert await db.fetchval("SELECT count(*) FROM messages WHERE status = 'streaming'") == 0


async def test_a_failure_storing_the_answer_still_ends_the_run(
    chat: Chat, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.script(say("An answer that cannot be stored.", delay=0.01), say("This one can."))
    real_update = SessionService.update_message

    async def refuse_the_end(self: SessionService, **kwargs: Any) -> Any:
        if kwargs.get("status") != "streaming":
            raise asyncpg.exceptions.DataCorruptedError("simulated: the final write is refused")
        return await real_update(self, **kwargs)

    monkeypatch.setattr(SessionService, "update_message", refuse_the_end)
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "hello"})
        frames = await sock.until("assistant_end", timeout=30)
        errors = [f for f in frames if f["type"] == "error"]
        assert len(errors) == 1
        assert (errors[0]["code"], errors[0]["retryable"]) == ("internal", True)
        assert frames[-1]["finish_reason"] == "error"
        assert frames.index(errors[0]) < len(frames) - 1  # the error comes before the end
        monkeypatch.setattr(SessionService, "update_message", real_update)
        # The slot was freed: the next message runs.
        await sock.send({"type": "message", "content": "again"})
        again = await sock.until("assistant_end", timeout=30)
        assert again[-1]["finish_reason"] == "stop"
    history = await chat.history()
    assert [m["status"] for m in history] == ["complete", "error", "complete", "complete"]
    assert (await chat.session())["active_run_id"] is None
