"""A real PostgreSQL stopped under a running server: every answer says "try again later" (503 `unavailable` with
Retry-After; sockets 1013 or an `unavailable` error frame), never a 500 or a 4401 that would make clients throw
away good tokens; once it is back, everything works again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from chinwag.config import Settings
from chinwag.db.embedded import embedded_postgres
from chinwag.db.migrate import migrate
from chinwag.main import create_app
from tests.conftest import TEST_PASSWORD, RunningServer, serve
from tests.routes.chat_support import Socket


class Database:
    """A throwaway embedded PostgreSQL on its own data dir, stopped and started at will."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.dsn = ""
        self._running: contextlib.AbstractAsyncContextManager[str] | None = None

    async def start(self) -> str:
        self._running = embedded_postgres(self.data_dir)
        dsn = await self._running.__aenter__()
        assert not self.dsn or dsn == self.dsn, "the restarted server must be reachable at the same address"
        self.dsn = dsn
        return dsn

    async def stop(self) -> None:
        assert self._running is not None
        running, self._running = self._running, None
        await running.__aexit__(None, None, None)
        with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
            await asyncpg.connect(self.dsn, timeout=5)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(tmp_path / "outage")
    conn = await asyncpg.connect(await db.start())
    try:
        await migrate(conn)
    finally:
        await conn.close()
    try:
        yield db
    finally:
        if db._running is not None:
            await db.stop()


@pytest.fixture
async def server(database: Database, settings_factory: Callable[..., Settings]) -> AsyncIterator[RunningServer]:
    settings = settings_factory(database_url=database.dsn)
    async with serve(create_app(settings)) as running:
        yield running


def assert_unavailable(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.json()["code"] == "unavailable"
    assert int(answer.headers["retry-after"]) >= 1
    assert "Traceback" not in answer.text


async def close_code(url: str) -> int | None:
    async with websockets.connect(url, open_timeout=10) as ws:
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(30):
                while True:
                    await ws.recv()
        return ws.close_code


async def test_a_stopped_database_answers_503_and_1013_then_recovers(database: Database, server: RunningServer) -> None:
    creds = {"email": "outage@example.com", "password": TEST_PASSWORD}
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        assert (await client.post("/api/v1/auth/register", json=creds)).status_code == 201
        tokens = (await client.post("/api/v1/auth/login", json=creds)).json()
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        session_id = (await client.post("/api/v1/sessions", json={}, headers=headers)).json()["id"]
        ws_url = f"{server.ws_url}/ws/chat/{session_id}?token={tokens['access_token']}"
        async with websockets.connect(ws_url, open_timeout=10) as ws:
            open_socket = Socket(ws)
            assert (await open_socket.recv())["type"] == "ready"

            await database.stop()

            assert_unavailable(await client.post("/api/v1/auth/login", json=creds))
            other = {"email": "new@example.com", "password": TEST_PASSWORD}
            assert_unavailable(await client.post("/api/v1/auth/register", json=other))
            refresh = {"refresh_token": tokens["refresh_token"]}
            assert_unavailable(await client.post("/api/v1/auth/refresh", json=refresh))
            assert_unavailable(await client.get("/api/v1/sessions", headers=headers))
            assert (await client.get("/health/ready")).status_code == 503
            assert await close_code(ws_url) == 1013  # not 4401: the token is fine

            # The socket that was already open stays usable and says why nothing starts.
            await open_socket.send({"type": "message", "content": "hello"})
            frame = await open_socket.recv(timeout=60)
            assert frame["type"] == "error"
            assert frame["code"] == "unavailable"
            assert frame["retryable"] is True
            await open_socket.ping()

        await database.start()
        # The pool reconnects by itself: the first requests after the restart may still meet dead connections.
        async with asyncio.timeout(60):
            while (answer := await client.post("/api/v1/auth/login", json=creds)).status_code != 200:
                assert_unavailable(answer)
                await asyncio.sleep(0.5)
        assert (await client.get("/api/v1/sessions", headers=headers)).status_code == 200
        assert (await client.post("/api/v1/auth/refresh", json=refresh)).status_code == 200
        async with websockets.connect(ws_url, open_timeout=10) as ws:
            assert (await Socket(ws).recv())["type"] == "ready"
