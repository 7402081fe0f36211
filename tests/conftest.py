"""Shared fixtures: a real PostgreSQL (one database per run), real servers on loopback ports.

`CHINWAG_TEST_DATABASE_URL` names a server to create the run's database on; unset, an embedded PostgreSQL is
started for the run. `CHINWAG_TEST_REDIS_URL` names a Redis. With `CHINWAG_REQUIRE_SERVICES=1` (CI), a service
that is configured but unreachable, or missing, fails the run instead of skipping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from chinwag.config import Settings
from chinwag.db.embedded import embedded_postgres
from chinwag.db.migrate import migrate
from chinwag.db.pool import open_pool
from chinwag.main import create_app

REQUIRE_SERVICES = os.environ.get("CHINWAG_REQUIRE_SERVICES") == "1"
_TABLES = ("users", "refresh_tokens", "api_keys", "sessions", "messages", "runs", "llm_context", "files")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
async def server_dsn(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A PostgreSQL server to create test databases on."""
    url = os.environ.get("CHINWAG_TEST_DATABASE_URL")
    if url:
        try:
            conn = await asyncpg.connect(url, timeout=5)
            await conn.close()
        except (OSError, asyncpg.PostgresError) as exc:
            pytest.fail(f"CHINWAG_TEST_DATABASE_URL is set but unreachable: {exc}")
        yield url
        return
    async with embedded_postgres(tmp_path_factory.mktemp("embedded")) as dsn:
        yield dsn


@pytest.fixture(scope="session")
async def database_dsn(server_dsn: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test run, dropped at the end."""
    name = f"chinwag_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = _with_database(server_dsn, name)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    yield dsn
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def db(database_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test database, with every table emptied first."""
    conn = await asyncpg.connect(database_dsn)
    await conn.execute(f"TRUNCATE {', '.join(_TABLES)} CASCADE")
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def app_pool(db: asyncpg.Connection, database_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the (emptied) test database, set up exactly like the app's (JSON codecs included)."""
    async with open_pool(database_dsn, size=10, run_migrations=False) as pool:
        yield pool


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("CHINWAG_TEST_REDIS_URL")
    if not url:
        if REQUIRE_SERVICES:
            pytest.fail("CHINWAG_REQUIRE_SERVICES=1 but CHINWAG_TEST_REDIS_URL is unset")
        pytest.skip("CHINWAG_TEST_REDIS_URL is unset (no Redis on this machine)")
    return url


@pytest.fixture
def lean_stream(request: pytest.FixtureRequest) -> bool:
    """Which model stream test servers use: the lean one (the default), or the `openai` client's own when a test is
    marked `@STOCK_TOO` (it then runs once on each)."""
    return bool(getattr(request, "param", True))


STOCK_TOO = pytest.mark.parametrize("lean_stream", [True, False], ids=["lean", "stock"], indirect=True)
"""Run an end-to-end chat test on the lean model stream and again on the stock `openai` stream (the fallback that
`CHINWAG_LEAN_STREAM=false` selects), so that both keep working."""


@pytest.fixture
def settings_factory(database_dsn: str, tmp_path: Path, lean_stream: bool) -> Callable[..., Settings]:
    """Settings for a test server; keyword arguments override fields."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "lean_stream": lean_stream,
            "database_url": database_dsn,
            "data_dir": tmp_path / "data",
            "secret_key": "test-secret-" + "x" * 40,
            "registration": "open",
            "db_pool_size": 4,
            # Every test client is 127.0.0.1: tests of the registration limit set their own.
            "registrations_per_hour": 10_000,
            # Argon2id at its lowest cost: tests check behaviour, not hash strength.
            "password_hash_time_cost": 1,
            "password_hash_memory_kib": 1024,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@dataclass
class RunningServer:
    """A chinwag app served by a real uvicorn on a loopback port."""

    app: FastAPI
    url: str
    server: uvicorn.Server

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1)


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[RunningServer]:
    port = free_port()
    # proxy_headers off, as `chinwag serve` has it: the app alone decides whose X-Forwarded-For counts.
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        ws="chinwag.websocket.protocol:ChinwagWebSocketProtocol",  # as `chinwag serve` has it
        ws_max_size=1024 * 1024,
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("server stopped during start-up")
            await asyncio.sleep(0.01)
        yield RunningServer(app=app, url=f"http://127.0.0.1:{port}", server=server)
    finally:
        server.should_exit = True
        await task


ServerFactory = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def server_factory(
    db: asyncpg.Connection, settings_factory: Callable[..., Settings]
) -> AsyncIterator[ServerFactory]:
    """Start chinwag servers (settings overrides as keywords); all are stopped after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**overrides: Any) -> RunningServer:
            return await stack.enter_async_context(serve(create_app(settings_factory(**overrides))))

        yield start


@pytest.fixture
async def server(server_factory: ServerFactory) -> RunningServer:
    return await server_factory()


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=10) as c:
        yield c


@pytest.fixture
async def root_client(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        yield c


@dataclass
class TestUser:
    """A user registered and signed in through the real API."""

    __test__ = False  # not a test class, despite the name

    id: str
    email: str
    password: str
    access_token: str
    refresh_token: str
    headers: dict[str, str]


TEST_PASSWORD = "correct horse battery staple"
UserFactory = Callable[..., Awaitable[TestUser]]


@pytest.fixture
def user_factory(db: asyncpg.Connection) -> UserFactory:
    """`await user_factory(server, email=None, *, admin=False)`: register + log in over HTTP (registration must be
    open on that server, as it is by default in tests); `admin=True` then promotes the user in the database."""

    async def make(server: RunningServer, email: str | None = None, *, admin: bool = False) -> TestUser:
        email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=30) as c:
            registered = await c.post("/auth/register", json={"email": email, "password": TEST_PASSWORD})
            assert registered.status_code == 201, registered.text
            if admin:
                await db.execute("UPDATE users SET role = 'admin' WHERE id = $1", uuid.UUID(registered.json()["id"]))
            login = await c.post("/auth/login", json={"email": email, "password": TEST_PASSWORD})
            assert login.status_code == 200, login.text
        tokens = login.json()
        return TestUser(
            id=tokens["user"]["id"],
            email=tokens["user"]["email"],
            password=TEST_PASSWORD,
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
        )

    return make


@pytest.fixture
async def alice(server: RunningServer, user_factory: UserFactory) -> TestUser:
    return await user_factory(server, "alice@example.com")


@pytest.fixture
async def bob(server: RunningServer, user_factory: UserFactory) -> TestUser:
    return await user_factory(server, "bob@example.com")
