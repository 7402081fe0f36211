"""Layer 2 storage on a real PostgreSQL: gap-free seq under concurrency, updates, usage, paging, search."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

import asyncpg
import orjson
import pytest

from chinwag.db import messages as messages_db
from chinwag.db import sessions as sessions_db
from chinwag.schemas.messages import MessagePage, ToolCall
from chinwag.schemas.sessions import TokenUsage


def _window(model: str) -> int:
    return 1000


async def _user(pool: asyncpg.Pool, email: str = "someone@example.com") -> uuid.UUID:
    user_id: uuid.UUID = await pool.fetchval(
        "INSERT INTO users (email, password_hash, display_name) VALUES ($1, 'x', 'X') RETURNING id", email
    )
    return user_id


async def _session(pool: asyncpg.Pool, user_id: uuid.UUID) -> uuid.UUID:
    session = await sessions_db.insert_session(
        pool, user_id=user_id, title="t", model="m", instructions="", mcp_servers=None, window=_window
    )
    return uuid.UUID(session.id)


async def test_concurrent_appends_get_every_seq_once(app_pool: asyncpg.Pool) -> None:
    user_id = await _user(app_pool)
    first, second = await _session(app_pool, user_id), await _session(app_pool, user_id)

    async def append(session_id: uuid.UUID, i: int) -> int:
        message = await messages_db.append_message(app_pool, session_id=session_id, role="user", content=f"m{i}")
        return message.seq

    seqs = await asyncio.gather(*(append(first if i % 3 else second, i) for i in range(300)))
    first_seqs = sorted(s for i, s in enumerate(seqs) if i % 3)
    second_seqs = sorted(s for i, s in enumerate(seqs) if not i % 3)
    assert first_seqs == list(range(1, 201))
    assert second_seqs == list(range(1, 101))
    counts = {r["id"]: r["message_count"] for r in await app_pool.fetch("SELECT id, message_count FROM sessions")}
    assert counts == {first: 200, second: 100}
    stored = await app_pool.fetch("SELECT seq FROM messages WHERE session_id = $1 ORDER BY seq", first)
    assert [r["seq"] for r in stored] == list(range(1, 201))


async def test_failed_append_allocates_no_seq(app_pool: asyncpg.Pool) -> None:
    session_id = await _session(app_pool, await _user(app_pool))
    await messages_db.append_message(app_pool, session_id=session_id, role="user", content="one")
    with pytest.raises(asyncpg.CheckViolationError):
        # A role the CHECK constraint refuses, on purpose: the failed insert must not use up a seq.
        await messages_db.append_message(app_pool, session_id=session_id, role=cast(Any, "robot"), content="bad")
    second = await messages_db.append_message(app_pool, session_id=session_id, role="assistant", content="two")
    assert second.seq == 2


async def test_append_to_a_missing_session_raises(app_pool: asyncpg.Pool) -> None:
    with pytest.raises(LookupError):
        await messages_db.append_message(app_pool, session_id=uuid.uuid4(), role="user", content="hi")


async def test_append_bumps_updated_at_and_keeps_fields(app_pool: asyncpg.Pool) -> None:
    session_id = await _session(app_pool, await _user(app_pool))
    before = await app_pool.fetchval("SELECT updated_at FROM sessions WHERE id = $1", session_id)
    run_id = uuid.uuid4()
    tool = ToolCall(call_id="c1", name="get_time", arguments='{"tz": "UTC"}')
    message = await messages_db.append_message(
        app_pool,
        session_id=session_id,
        role="tool",
        content="",
        status="streaming",
        tool=tool,
        run_id=run_id,
        client_id="client-1",
    )
    after = await app_pool.fetchval("SELECT updated_at FROM sessions WHERE id = $1", session_id)
    assert after > before
    assert message.tool == tool
    assert message.run_id == str(run_id)
    assert message.client_id == "client-1"
    assert message.status == "streaming"
    assert message.usage is None

    done = await messages_db.update_message(
        app_pool,
        message_id=message.id,
        content="12:00",
        status="complete",
        tool=ToolCall(call_id="c1", name="get_time", arguments='{"tz": "UTC"}', output="12:00", ok=True),
        usage=TokenUsage(input_tokens=3, output_tokens=4),
    )
    assert done is not None
    assert (done.seq, done.content, done.status) == (1, "12:00", "complete")
    assert done.tool is not None
    assert done.tool.ok is True
    assert done.tool.output == "12:00"
    assert done.usage == TokenUsage(input_tokens=3, output_tokens=4)
    # usage and tool are kept when not given
    again = await messages_db.update_message(app_pool, message_id=message.id, content="12:01", status="complete")
    assert again is not None
    assert again.usage == done.usage
    assert again.tool == done.tool
    assert await messages_db.update_message(app_pool, message_id=uuid.uuid4(), content="x", status="error") is None


async def test_text_postgres_cannot_hold_is_replaced_not_refused(app_pool: asyncpg.Pool) -> None:
    session_id = await _session(app_pool, await _user(app_pool))
    message = await messages_db.append_message(
        app_pool, session_id=session_id, role="assistant", content="a\x00b\ud800c"
    )
    assert message.content == "a\ufffdb\ufffdc"


async def test_add_usage_accumulates(app_pool: asyncpg.Pool) -> None:
    user_id = await _user(app_pool)
    session_id = await _session(app_pool, user_id)
    await messages_db.add_usage(app_pool, session_id=session_id, input_tokens=10, output_tokens=5, context_tokens=40)
    await messages_db.add_usage(app_pool, session_id=session_id, input_tokens=1, output_tokens=2)
    session = await sessions_db.get_session(app_pool, user_id=user_id, session_id=session_id, window=_window)
    assert session is not None
    assert session.usage == TokenUsage(input_tokens=11, output_tokens=7)
    assert (session.context.tokens, session.context.limit) == (40, 1000)


async def test_page_messages_keyset(app_pool: asyncpg.Pool) -> None:
    user_id = await _user(app_pool)
    session_id = await _session(app_pool, user_id)

    async def page(**kw: int) -> tuple[list[int], bool]:
        result = await messages_db.page_messages(app_pool, user_id=user_id, session_id=session_id, **kw)
        assert result is not None
        return [m.seq for m in result[0]], result[1]

    assert await page(limit=4) == ([], False)
    for i in range(1, 11):
        await messages_db.append_message(app_pool, session_id=session_id, role="user", content=f"m{i}")
    assert await page(limit=4) == ([7, 8, 9, 10], True)
    assert await page(limit=4, before=7) == ([3, 4, 5, 6], True)
    assert await page(limit=4, before=3) == ([1, 2], False)
    assert await page(limit=4, before=1) == ([], False)
    assert await page(limit=4, after=6) == ([7, 8, 9, 10], False)
    assert await page(limit=3, after=0) == ([1, 2, 3], True)
    assert await page(limit=3, after=10) == ([], False)
    assert await page(limit=10) == (list(range(1, 11)), False)


async def test_page_messages_of_another_user_is_none(app_pool: asyncpg.Pool) -> None:
    owner, other = await _user(app_pool, "o@example.com"), await _user(app_pool, "x@example.com")
    session_id = await _session(app_pool, owner)
    await messages_db.append_message(app_pool, session_id=session_id, role="user", content="private")
    for kw in ({}, {"before": 5}, {"after": 0}):
        assert await messages_db.page_messages(app_pool, user_id=other, session_id=session_id, limit=5, **kw) is None
    assert await messages_db.page_messages(app_pool, user_id=owner, session_id=uuid.uuid4(), limit=5) is None


async def test_search_only_sees_the_users_own_messages(app_pool: asyncpg.Pool) -> None:
    alice, bob = await _user(app_pool, "a@example.com"), await _user(app_pool, "b@example.com")
    alice_session, bob_session = await _session(app_pool, alice), await _session(app_pool, bob)
    await messages_db.append_message(app_pool, session_id=alice_session, role="user", content="the zebra crossing")
    await messages_db.append_message(app_pool, session_id=bob_session, role="user", content="a zebra in the zoo")
    hits = await messages_db.search_messages(app_pool, user_id=alice, query="zebra", limit=10)
    assert [(h.session_id, h.seq) for h in hits] == [(str(alice_session), 1)]
    assert "zebra" in hits[0].snippet
    assert await messages_db.search_messages(app_pool, user_id=alice, query="zoo", limit=10) == []


async def test_fast_page_json_matches_the_typed_models(app_pool: asyncpg.Pool) -> None:
    user_id = await _user(app_pool)
    session_id = await _session(app_pool, user_id)
    run_id = uuid.uuid4()
    await messages_db.append_message(app_pool, session_id=session_id, role="user", content='héllo "quoted" \n ✓')
    await messages_db.append_message(
        app_pool,
        session_id=session_id,
        role="tool",
        content="",
        status="streaming",
        tool=ToolCall(call_id="c", name="n", arguments='{"a": [1, 2]}'),
        run_id=run_id,
        client_id="cid",
    )
    await messages_db.append_message(
        app_pool,
        session_id=session_id,
        role="assistant",
        content="done",
        status="interrupted",
        tool=None,
        usage=TokenUsage(input_tokens=5, output_tokens=0),
        run_id=run_id,
    )
    # a timestamp with zero microseconds is formatted differently by some encoders
    await app_pool.execute(
        "UPDATE messages SET created_at = '2026-01-02 03:04:05+00' WHERE session_id = $1 AND seq = 2", session_id
    )
    for kw in ({"limit": 50}, {"limit": 2}, {"limit": 2, "before": 3}, {"limit": 1, "after": 1}):
        typed = await messages_db.page_messages(app_pool, user_id=user_id, session_id=session_id, **kw)
        fast = await messages_db.page_messages_json(app_pool, user_id=user_id, session_id=session_id, **kw)
        assert typed is not None
        assert fast is not None
        expected = MessagePage(items=typed[0], has_more=typed[1]).model_dump_json().encode()
        # Timestamps compare as strings here, so their format must agree too (only jsonb key order may differ).
        assert orjson.loads(fast) == orjson.loads(expected), kw
    other = await _user(app_pool, "other@example.com")
    assert await messages_db.page_messages_json(app_pool, user_id=other, session_id=session_id, limit=5) is None
