"""A server process killed with SIGKILL mid-run: after a restart the answer so far is kept, marked `interrupted`, and
the session takes new messages. The first server is `python -m chinwag serve` in a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import ServerFactory, TestUser, free_port
from tests.fakes.openai_script import say
from tests.fakes.openai_server import FakeOpenAI
from tests.routes.chat_support import Chat, connect, text_of

SECRET = "test-secret-" + "x" * 40  # the one server_factory uses, so tokens stay valid across the restart
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


@contextlib.asynccontextmanager
async def chinwag_process(
    *, database_dsn: str, base_url: str, data_dir: Path, port: int
) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {
        **os.environ,
        "CHINWAG_DATABASE_URL": database_dsn,
        "OPENAI_BASE_URL": base_url,
        "CHINWAG_SECRET_KEY": SECRET,
        "CHINWAG_REGISTRATION": "open",
        "CHINWAG_DATA_DIR": str(data_dir),
        "PYTHONPATH": str(ROOT),
    }
    log = (data_dir / "server.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chinwag", "serve", "--port", str(port), env=env, stdout=log, stderr=log, cwd=ROOT
    )
    try:
        async with httpx.AsyncClient() as c:
            async with asyncio.timeout(60):
                while True:
                    if proc.returncode is not None:
                        raise AssertionError((data_dir / "server.log").read_text())
                    with contextlib.suppress(httpx.TransportError):
                        if (await c.get(f"http://127.0.0.1:{port}/health/live")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        log.close()


async def sign_up(url: str) -> TestUser:
    email = f"crash-{uuid.uuid4().hex[:8]}@example.com"
    password = "correct horse battery staple"
    async with httpx.AsyncClient(base_url=url + "/api/v1", timeout=30) as c:
        assert (await c.post("/auth/register", json={"email": email, "password": password})).status_code == 201
        tokens = (await c.post("/auth/login", json={"email": email, "password": password})).json()
    return TestUser(
        id=tokens["user"]["id"],
        email=email,
        password=password,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )


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
        user = await sign_up(url)
        async with httpx.AsyncClient(base_url=url + "/api/v1", headers=user.headers) as c:
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
