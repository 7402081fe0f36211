"""Migrations on a fresh database: applied once, in order, even when several processes start at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from chinwag.db import branches as branches_db
from chinwag.db import context as context_db
from chinwag.db import messages as messages_db
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


async def test_0007_makes_existing_sessions_one_branch_without_rewriting_messages(fresh_dsn: str) -> None:
    conn = await asyncpg.connect(fresh_dsn)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz DEFAULT now())"
        )
        for name, sql in _migrations():
            if name >= "0007":
                break
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
        user_id = await conn.fetchval(
            "INSERT INTO users (email, password_hash, display_name) VALUES ('old@example.com', 'x', 'Old') RETURNING id"
        )
        sid = await conn.fetchval(
            "INSERT INTO sessions (user_id, model, message_count) VALUES ($1, 'm', 4) RETURNING id", user_id
        )
        for seq, role in enumerate(("user", "assistant", "user", "assistant"), start=1):
            await conn.execute(
                "INSERT INTO messages (session_id, seq, role, content) VALUES ($1, $2, $3, $4)",
                sid,
                seq,
                role,
                f"m{seq}",
            )
        # Layer 1 as runs wrote it before: turn_seq is the user message's seq, nothing says which answer.
        for item, turn in (
            ('{"role": "user", "content": "m1"}', 1),
            ('{"type": "message", "role": "assistant", "content": "m2"}', 1),
            ('{"role": "user", "content": "m3"}', 3),
            ('{"type": "message", "role": "assistant", "content": "m4"}', 3),
        ):
            await conn.execute(
                "INSERT INTO llm_context (session_id, item, tokens, turn_seq) VALUES ($1, $2::jsonb, 1, $3)",
                sid,
                item,
                turn,
            )
        before = await conn.fetchval("SELECT sum(xmin::text::bigint) FROM messages")

        assert await migrate(conn) == [name for name, _ in _migrations() if name >= "0007"]

        assert await conn.fetchval("SELECT sum(xmin::text::bigint) FROM messages") == before  # no row rewritten
        assert await conn.fetchval("SELECT leaf_seq FROM sessions WHERE id = $1", sid) == 4
        rows = await conn.fetch("SELECT " + messages_db.MESSAGE_COLUMNS + " FROM messages m ORDER BY seq")
        assert [(r["seq"], r["parent_seq"], r["sibling_seqs"]) for r in rows] == [
            (1, None, [1]),
            (2, 1, [2]),
            (3, 2, [3]),
            (4, 3, [4]),
        ]
        # A regenerate of the last question on the old rows: its question stays in the model's view, its old answer
        # (found as the message after the question) goes.
        async with conn.transaction():
            await branches_db.lock_session(conn, session_id=sid)
            await branches_db.set_leaf(conn, session_id=sid, leaf=3)
        found = await context_db.unsummarized(conn, session_id=str(sid))
        assert found is not None
        assert [row.item["content"] for row in found[1]] == ["m1", "m2", "m3"]
    finally:
        await conn.close()
