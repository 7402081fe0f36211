"""Migrations on a fresh database: applied once, in order, even when several processes start at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from chinwag.db.migrate import _migrations, migrate


@pytest.fixture
async def fresh_dsn(server_dsn: str) -> AsyncIterator[str]:
    name = f"chinwag_migrate_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield urlunsplit(urlsplit(server_dsn)._replace(path=f"/{name}"))
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _migrate_once(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_each_file_once(fresh_dsn: str) -> None:
    names = [name for name, _ in _migrations()]
    results = await asyncio.gather(*(_migrate_once(fresh_dsn) for _ in range(6)))
    applied = [name for result in results for name in result]
    assert sorted(applied) == sorted(names)
    assert [r for r in results if r] == [names]  # one connection did all the work, in order
    assert await _migrate_once(fresh_dsn) == []

    conn = await asyncpg.connect(fresh_dsn)
    try:
        recorded = [r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations ORDER BY name")]
        tables = {
            r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    finally:
        await conn.close()
    assert recorded == names
    assert {"users", "sessions", "messages", "runs", "llm_context", "files"} <= tables
