"""The sessions table on a real PostgreSQL: keyset listing with ties, partial updates, cascading delete."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg

from chinwag.db import messages as messages_db
from chinwag.db import sessions as sessions_db


def _window(model: str) -> int:
    return 4096 if model == "big" else 1000


async def _user(pool: asyncpg.Pool) -> uuid.UUID:
    user_id: uuid.UUID = await pool.fetchval(
        "INSERT INTO users (email, password_hash, display_name) VALUES ($1, 'x', 'X') RETURNING id",
        f"{uuid.uuid4().hex}@example.com",
    )
    return user_id


async def test_list_pages_through_ties_in_updated_at(app_pool: asyncpg.Pool) -> None:
    user_id = await _user(app_pool)
    same_time = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(9):
        session = await sessions_db.insert_session(
            app_pool, user_id=user_id, title=f"s{i}", model="m", instructions="", mcp_servers=None, window=_window
        )
        await app_pool.execute(
            "UPDATE sessions SET updated_at = $2, pinned = $3 WHERE id = $1", uuid.UUID(session.id), same_time, i < 2
        )
    seen: list[str] = []
    after: sessions_db.ListKey | None = None
    while True:
        page, more = await sessions_db.list_sessions(app_pool, user_id=user_id, limit=4, after=after, window=_window)
        seen += [s.id for s in page]
        if not more:
            break
        last = page[-1]
        after = (last.pinned, last.updated_at, uuid.UUID(last.id))
    everything, more = await sessions_db.list_sessions(app_pool, user_id=user_id, limit=100, after=None, window=_window)
    assert not more
    assert seen == [s.id for s in everything]
    assert len(set(seen)) == 9
    assert [s.pinned for s in everything] == [True, True] + [False] * 7
    unpinned_ids = [uuid.UUID(s.id) for s in everything[2:]]
    assert unpinned_ids == sorted(unpinned_ids, reverse=True)


async def test_update_sets_only_given_columns(app_pool: asyncpg.Pool) -> None:
    user_id = await _user(app_pool)
    session = await sessions_db.insert_session(
        app_pool, user_id=user_id, title="t", model="m", instructions="be brief", mcp_servers=["time"], window=_window
    )
    sid = uuid.UUID(session.id)
    updated = await sessions_db.update_session(
        app_pool, user_id=user_id, session_id=sid, changes={"model": "big", "pinned": True}, window=_window
    )
    assert updated is not None
    assert (updated.title, updated.model, updated.pinned, updated.instructions) == ("t", "big", True, "be brief")
    assert updated.mcp_servers == ["time"]
    assert updated.context.limit == 4096
    assert updated.updated_at > session.updated_at
    cleared = await sessions_db.update_session(
        app_pool, user_id=user_id, session_id=sid, changes={"mcp_servers": None}, window=_window
    )
    assert cleared is not None
    assert cleared.mcp_servers is None
    assert cleared.pinned is True
    other = await _user(app_pool)
    assert (
        await sessions_db.update_session(
            app_pool, user_id=other, session_id=sid, changes={"title": "x"}, window=_window
        )
        is None
    )


async def test_delete_cascades_and_returns_file_keys(app_pool: asyncpg.Pool) -> None:
    user_id = await _user(app_pool)
    session = await sessions_db.insert_session(
        app_pool, user_id=user_id, title="t", model="m", instructions="", mcp_servers=None, window=_window
    )
    sid = uuid.UUID(session.id)
    await messages_db.append_message(app_pool, session_id=sid, role="user", content="hello")
    await app_pool.execute("INSERT INTO llm_context (session_id, item, tokens) VALUES ($1, '{}', 1)", sid)
    await app_pool.execute("INSERT INTO runs (session_id) VALUES ($1)", sid)
    await app_pool.execute(
        "INSERT INTO files (session_id, name, size, content_type, sha256, storage_key)"
        " VALUES ($1, 'a.txt', 1, 'text/plain', 'x', 'key-a'), ($1, 'b.txt', 1, 'text/plain', 'y', 'key-b')",
        sid,
    )
    other = await _user(app_pool)
    assert await sessions_db.delete_session(app_pool, user_id=other, session_id=sid) is None
    keys = await sessions_db.delete_session(app_pool, user_id=user_id, session_id=sid)
    assert sorted(keys or []) == ["key-a", "key-b"]
    for table in ("messages", "llm_context", "runs", "files"):
        assert await app_pool.fetchval(f"SELECT count(*) FROM {table} WHERE session_id = $1", sid) == 0
    assert await sessions_db.delete_session(app_pool, user_id=user_id, session_id=sid) is None
