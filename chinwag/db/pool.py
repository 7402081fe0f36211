"""The asyncpg pool, owned by the app's lifespan."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson

from chinwag.config import Settings
from chinwag.db.embedded import embedded_postgres
from chinwag.db.migrate import migrate
from chinwag.db.sessions import Executor


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )
    await conn.set_type_codec("json", encoder=json.dumps, decoder=orjson.loads, schema="pg_catalog")


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """Pool release hook. asyncpg has already rolled back any open transaction and dropped listeners; its default
    reset would also run `RESET ALL; CLOSE ALL; UNLISTEN *; SELECT pg_advisory_unlock_all()`, one more round trip
    for every query made through the pool. chinwag keeps no session state on pooled connections (its advisory locks
    are transaction-scoped), so there is nothing left to reset."""


@contextlib.asynccontextmanager
async def statement_timeout(db: Executor, seconds: float) -> AsyncIterator[Executor]:
    """A connection (from `db`, a pool or a connection) in a transaction whose statements are cancelled after
    `seconds` (PostgreSQL raises `QueryCanceledError`): for queries whose cost depends on what a user typed."""
    async with contextlib.AsyncExitStack() as stack:
        conn = await stack.enter_async_context(db.acquire()) if isinstance(db, asyncpg.Pool) else db
        await stack.enter_async_context(conn.transaction())
        await conn.execute("SELECT set_config('statement_timeout', $1, true)", f"{max(1, int(seconds * 1000))}ms")
        yield conn


@contextlib.asynccontextmanager
async def database_url(settings: Settings) -> AsyncIterator[str]:
    """The configured DSN, or the embedded server's while it runs."""
    if settings.database_url:
        yield settings.database_url
    else:
        async with embedded_postgres(settings.data_dir) as dsn:
            yield dsn


class BoundedPool(asyncpg.Pool):
    """A pool whose `acquire()` waits at most `acquire_timeout` seconds unless told otherwise (asyncpg's waits for
    ever), so a request that finds every connection busy fails with `TimeoutError` (503) instead of queueing
    without end. `pool.fetch()` and the other shortcuts acquire through it too."""

    __slots__ = ("_acquire_timeout",)

    def __init__(self, *args: Any, acquire_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> Any:
        return super().acquire(timeout=self._acquire_timeout if timeout is None else timeout)


@contextlib.asynccontextmanager
async def open_pool(
    dsn: str, *, size: int = 10, run_migrations: bool = True, acquire_timeout: float | None = None
) -> AsyncIterator[asyncpg.Pool]:
    """A pool on `dsn`, migrated first. Connections come up lazily, so a database that is down at start-up
    fails here, and one that goes down later only fails the requests that need it. `acquire_timeout`: how long a
    caller may wait for a free connection (None: as long as it takes)."""
    if run_migrations:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
    pool = await BoundedPool(
        dsn,
        min_size=1,
        max_size=size,
        init=_init_connection,
        reset=_reset_connection,
        command_timeout=30,
        acquire_timeout=acquire_timeout,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        max_queries=50000,
        max_inactive_connection_lifetime=300.0,  # these four: asyncpg.create_pool's defaults
        loop=None,
    )
    try:
        yield pool
    finally:
        await pool.close()
