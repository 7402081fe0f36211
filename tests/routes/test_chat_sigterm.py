"""SIGTERM to a real `chinwag serve`: new runs are refused, a run in flight finishes, one that outlasts the grace
period is interrupted (its socket gets `assistant_end`), then every socket is closed with 1012 and the process
exits cleanly."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import free_port
from tests.fakes.openai_script import say
from tests.fakes.openai_server import FakeOpenAI
from tests.routes.chat_support import Chat, Socket, connect, text_of
from tests.routes.process_support import chinwag_serve, sign_up


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


async def read_to_the_end(sock: Socket) -> None:
    while True:
        await sock.recv(timeout=30)


async def closed_code(sock: Socket) -> int:
    """Read until the server closes the socket; its close code."""
    with pytest.raises(ConnectionClosed) as closed:
        await read_to_the_end(sock)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def test_sigterm_drains_runs_then_closes_sockets_with_1012(
    fake: FakeOpenAI, database_dsn: str, tmp_path: Path
) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    # The short answer takes about a second; the long one far more than the grace period.
    short_words = " ".join(f"s{i}" for i in range(10))
    long_words = " ".join(f"w{i}" for i in range(600))
    fake.script(say(long_words, delay=0.1), say(short_words, delay=0.1))
    env = {"CHINWAG_DATABASE_URL": database_dsn, "OPENAI_BASE_URL": fake.base_url, "CHINWAG_SHUTDOWN_GRACE_S": "15"}
    async with chinwag_serve(port=port, data_dir=data_dir, env=env) as proc:
        url = f"http://127.0.0.1:{port}"
        user = await sign_up(url, prefix="sigterm")
        async with httpx.AsyncClient(base_url=url + "/api/v1", headers=user.headers, timeout=60) as c:
            sessions = [(await c.post("/sessions", json={"title": t})).json()["id"] for t in ("long", "short", "new")]
        chats = [Chat(base_url=url, user=user, session_id=s) for s in sessions]
        async with connect(chats[0]) as long_sock, connect(chats[1]) as short_sock, connect(chats[2]) as new_sock:
            await long_sock.send({"type": "message", "content": "talk for a long time"})
            long_frames = await long_sock.until("text_delta", timeout=30)
            await short_sock.send({"type": "message", "content": "say a little"})
            short_frames = await short_sock.until("text_delta", timeout=30)

            proc.send_signal(signal.SIGTERM)
            async with httpx.AsyncClient(base_url=url, timeout=60) as c, asyncio.timeout(30):
                while (ready := await c.get("/health/ready")).status_code != 503:
                    await asyncio.sleep(0.05)
            assert ready.json()["status"] == "draining"

            # A new run is refused, retryably; the socket stays usable.
            await new_sock.send({"type": "message", "content": "anyone there?"})
            refused = await new_sock.recv()
            assert (refused["type"], refused["code"], refused["retryable"]) == ("error", "unavailable", True)
            await new_sock.ping()

            # The short run finishes within the grace period, whole.
            short_frames += await short_sock.until("assistant_end", timeout=30)
            assert short_frames[-1]["finish_reason"] == "stop"
            assert text_of(short_frames) == short_words

            # The long one is interrupted at the end of it, and its socket is told.
            long_frames += await long_sock.until("assistant_end", timeout=60)
            assert long_frames[-1]["finish_reason"] == "interrupted"
            assert long_words.startswith(text_of(long_frames))

            # Then every socket is closed with 1012 (service restart): clients reconnect.
            codes = [await closed_code(sock) for sock in (long_sock, short_sock, new_sock)]
            assert codes == [1012, 1012, 1012]
        async with asyncio.timeout(60):
            await proc.wait()
    assert proc.returncode == 0
    log = (data_dir / "server.log").read_text()
    assert "Traceback" not in log
    assert "SIGTERM: draining 2 run(s)" in log
