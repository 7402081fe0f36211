"""A server process killed with SIGKILL mid-run: after a restart the answer so far is kept, marked `interrupted`, and
the session takes new messages. The first server is `python -m chinwag serve` in a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import ServerFactory, free_port
from tests.fakes.openai_script import say
from tests.fakes.openai_server import FakeOpenAI
from tests.routes.chat_support import Chat, connect, text_of
from tests.routes.process_support import chinwag_serve, sign_up


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


def chinwag_process(
    *, database_dsn: str, base_url: str, data_dir: Path, port: int
) -> contextlib.AbstractAsyncContextManager[asyncio.subprocess.Process]:
    env = {"CHINWAG_DATABASE_URL": database_dsn, "OPENAI_BASE_URL": base_url}
    return chinwag_serve(port=port, data_dir=data_dir, env=env, ready="/health/live")


async def test_sigkill_mid_run_leaves_the_answer_interrupted_after_restart(
    fake: FakeOpenAI, database_dsn: str, db: asyncpg.Connection, server_factory: ServerFactory, tmp_path: Path
) -> None:
    words = " ".join(f"w{i}" for i in range(400))
    fake.script(say(words, delay=0.03))
    port = free_port()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    async with chinwag_process(database_dsn=database_dsn, base_url=fake.base_url, data_dir=data_dir, port=port) as proc:
        url = f"http://127.0.0.1:{port}"
        user = await sign_up(url, prefix="crash")
        async with httpx.AsyncClient(base_url=url + "/api/v1", headers=user.headers, timeout=60) as c:
            session_id = (await c.post("/sessions", json={"title": "crash"})).json()["id"]
        first = Chat(base_url=url, user=user, session_id=session_id)
        async with connect(first) as sock:
            await sock.send({"type": "message", "content": "talk for a long time"})
            frames = await sock.until("assistant_start")
            # Past a checkpoint (about once a second), then the process dies without any chance to clean up.
            async with asyncio.timeout(20):
                while len(text_of(frames)) < 150:
                    frames.append(await sock.recv())
            await asyncio.sleep(1.2)
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
    streamed = text_of(frames)
    sid = uuid.UUID(session_id)
    left = await db.fetchrow("SELECT content, status FROM messages WHERE session_id = $1 AND role = 'assistant'", sid)
    assert left is not None
    assert left["status"] == "streaming"
    assert left["content"]  # checkpointed while it streamed
    assert words.startswith(left["content"])
    assert await db.fetchval("SELECT status FROM runs WHERE session_id = $1", sid) == "running"

    # Restart: the new process finds what the dead one left.
    fake.script(say("I am back."))
    server = await server_factory(openai_base_url=fake.base_url)
    chat = Chat.on(server, user, session_id)
    history = await chat.history()
    assert [(m["role"], m["status"]) for m in history] == [("user", "complete"), ("assistant", "interrupted")]
    assert words.startswith(history[1]["content"])
    assert streamed.startswith(history[1]["content"]) or history[1]["content"].startswith(streamed)
    assert await db.fetchval("SELECT status FROM runs WHERE session_id = $1", sid) == "interrupted"
    async with connect(chat) as sock:
        assert sock.ready["active_run"] is None
        await sock.send({"type": "message", "content": "are you there?"})
        again = await sock.until("assistant_end")
    assert again[-1]["finish_reason"] == "stop"
    assert text_of(again) == "I am back."
