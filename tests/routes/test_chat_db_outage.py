"""A real PostgreSQL stopped mid-run and started again: the run ends at once with `error` (never stuck `busy`),
what it streamed is saved once the database is back, and the session takes the next message.

The database is a throwaway embedded server (`chinwag.db.embedded`) with its own data dir under `tmp_path`, so
stopping it touches nothing else."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from chinwag.db.embedded import embedded_server
from tests.conftest import ServerFactory, UserFactory
from tests.fakes.openai_script import say
from tests.fakes.openai_server import FakeOpenAI
from tests.routes.chat_support import Chat, connect, new_session, text_of


@dataclass
class ThrowawayPostgres:
    """An embedded PostgreSQL that a test may stop and start again (same data, same address)."""

    data_dir: Path
    dsn: str = ""
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def _start(self) -> None:
        dsn = self._stack.enter_context(embedded_server(self.data_dir))
        assert not self.dsn or dsn == self.dsn, "the restarted server must keep its address"
        self.dsn = dsn

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    async def stop(self) -> None:
        stack, self._stack = self._stack, contextlib.ExitStack()
        await asyncio.to_thread(stack.close)


@pytest.fixture
async def postgres(tmp_path: Path) -> AsyncIterator[ThrowawayPostgres]:
    server = ThrowawayPostgres(tmp_path / "pg-outage")
    server.data_dir.mkdir()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


async def test_postgres_stopped_mid_run_ends_the_run_and_keeps_its_text(
    postgres: ThrowawayPostgres, fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    words = " ".join(f"w{i}" for i in range(400))
    fake.script(say(words, delay=0.03), say("Back again."))
    server = await server_factory(openai_base_url=fake.base_url, database_url=postgres.dsn)
    user = await user_factory(server)
    chat = Chat.on(server, user, await new_session(server, user))
    async with connect(chat) as sock, connect(chat) as other:
        await sock.send({"type": "message", "content": "talk for a long time"})
        frames = await sock.until("assistant_start")
        while len(text_of(frames)) < 60:
            frames.append(await sock.recv())
        await postgres.stop()
        # The next checkpoint fails; after its brief retries the run ends, on every socket.
        frames += await sock.until("assistant_end", timeout=60)
        seen_by_other = await other.until("assistant_end", timeout=60)
        for got in (frames, seen_by_other):
            errors = [f for f in got if f["type"] == "error"]
            assert [(e["code"], e["retryable"]) for e in errors] == [("internal", True)]
            assert got[-1]["finish_reason"] == "error"
        streamed = text_of(frames)
        assert 0 < len(streamed) < len(words)
        # An interrupt while the database is away is answered (there is nothing to stop, or it cannot tell).
        await sock.send({"type": "interrupt"})
        answer = await sock.recv(timeout=30)
        assert answer["type"] == "error"
        await sock.ping()

        await postgres.start()
        # Once the database is back, the kept end is written and the session takes the next message.
        conn = await asyncpg.connect(postgres.dsn)
        try:
            async with asyncio.timeout(60):
                while True:
                    rows = await conn.fetch("SELECT role, status, content FROM messages ORDER BY seq")
                    if [(r["role"], r["status"]) for r in rows] == [("user", "complete"), ("assistant", "error")]:
                        break
                    await asyncio.sleep(0.2)
            assert rows[1]["content"] == streamed
            assert await conn.fetchval("SELECT status FROM runs") == "error"
            assert await conn.fetchval("SELECT count(*) FROM sessions WHERE active_run_id IS NOT NULL") == 0
        finally:
            await conn.close()
        await sock.send({"type": "message", "content": "are you there?"})
        again = await sock.until("assistant_end", timeout=30)
        assert again[-1]["finish_reason"] == "stop"
        assert text_of(again) == "Back again."
    history = await chat.history()
    assert [(m["role"], m["status"]) for m in history] == [
        ("user", "complete"),
        ("assistant", "error"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert history[1]["content"] == streamed


async def test_postgres_back_before_the_heartbeat_the_next_message_is_not_busy(
    postgres: ThrowawayPostgres, fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    """Once the database answers, the next message is never refused as `busy` by the dead run's slot: the end kept
    in memory is written by the message itself if the heartbeat has not written it yet."""
    words = " ".join(f"w{i}" for i in range(400))
    fake.script(say(words, delay=0.03), say("Right away."))
    server = await server_factory(openai_base_url=fake.base_url, database_url=postgres.dsn)
    user = await user_factory(server)
    chat = Chat.on(server, user, await new_session(server, user))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "talk"})
        frames = await sock.until("assistant_start")
        while len(text_of(frames)) < 30:
            frames.append(await sock.recv())
        await postgres.stop()
        frames += await sock.until("assistant_end", timeout=60)
        assert frames[-1]["finish_reason"] == "error"
        await postgres.start()
        pending = server.app.state.chat.deps.pending
        async with asyncio.timeout(60):
            while True:
                await sock.send({"type": "message", "content": "next"})
                first = await sock.recv(timeout=30)
                if first["type"] != "error":  # the pool may still be reconnecting: retry like a client would
                    break
                assert first["code"] == "internal", first  # never "busy"
                await asyncio.sleep(0.5)
        assert first["type"] == "user_message"
        again = await sock.until("assistant_end", timeout=30)
        assert again[-1]["finish_reason"] == "stop"
    assert len(pending) == 0
