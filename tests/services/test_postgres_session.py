"""PostgresSession: the SDK Session protocol on table `llm_context`, against a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import pytest
from agents import Session, TResponseInputItem
from agents.testing import assistant_message, function_call

from chinwag.db.pool import open_pool
from chinwag.services.context_items import to_json_item
from chinwag.services.postgres_session import PostgresSession
from tests.services.layer1_support import WordCounter, assistant, call, make_session, output, user


@pytest.fixture
async def pool(database_dsn: str, db: asyncpg.Connection) -> AsyncIterator[asyncpg.Pool]:
    async with open_pool(database_dsn, size=2, run_migrations=False) as p:
        yield p


@pytest.fixture
async def store(pool: asyncpg.Pool, db: asyncpg.Connection) -> PostgresSession:
    _, session_id = await make_session(db)
    return PostgresSession(pool, session_id, counter=WordCounter())


def items(*values: dict[str, Any]) -> list[TResponseInputItem]:
    return [cast(TResponseInputItem, v) for v in values]


async def test_satisfies_the_sdk_session_protocol(store: PostgresSession) -> None:
    assert isinstance(store, Session)


async def test_items_round_trip_in_order_with_their_token_counts(
    store: PostgresSession, db: asyncpg.Connection
) -> None:
    await store.add_items(items(user("what is the weather in Oslo"), call("c1"), output("c1", "sunny and warm")))
    await store.add_items(items(assistant("It is sunny.")))

    got = await store.get_items()
    assert got == [
        user("what is the weather in Oslo"),
        call("c1"),
        output("c1", "sunny and warm"),
        assistant("It is sunny."),
    ]
    tokens = await db.fetch("SELECT tokens FROM llm_context WHERE session_id = $1 ORDER BY id", store.session_id)
    assert [r["tokens"] for r in tokens] == [2 + 6, 2 + 3, 2 + 4, 2 + 3]


async def test_limit_returns_the_newest_items_oldest_first(store: PostgresSession) -> None:
    await store.add_items(items(user("one"), assistant("two"), user("three"), assistant("four")))
    assert await store.get_items(limit=2) == [user("three"), assistant("four")]
    assert await store.get_items(limit=10) == await store.get_items()
    assert await store.get_items(limit=0) == []


async def test_sdk_output_models_are_stored_as_their_json(store: PostgresSession) -> None:
    message = assistant_message("hello there")
    tool_call = function_call("lookup", {"q": "x"}, call_id="c9")
    await store.add_items(items(to_json_item(message), to_json_item(tool_call)))
    got = await store.get_items()
    assert cast(dict[str, Any], got[0])["content"][0]["text"] == "hello there"
    assert got[1] == {"id": "c9", "call_id": "c9", "type": "function_call", "name": "lookup", "arguments": '{"q":"x"}'}


async def test_nul_characters_do_not_break_jsonb(store: PostgresSession) -> None:
    await store.add_items(items(output("c1", "bin\x00ary")))
    assert await store.get_items() == [output("c1", "bin\ufffdary")]


async def test_turns_are_numbered_from_user_messages_or_given(store: PostgresSession, db: asyncpg.Connection) -> None:
    await store.add_items(items(user("a"), assistant("b")))
    await store.add_items(items(user("c"), call("c1"), output("c1", "x"), assistant("d")))
    store.turn_seq = 7  # the chat service passes the Layer 2 seq of the user message
    await store.add_items(items(user("e"), assistant("f")))
    rows = await db.fetch("SELECT turn_seq FROM llm_context WHERE session_id = $1 ORDER BY id", store.session_id)
    assert [r["turn_seq"] for r in rows] == [1, 1, 2, 2, 2, 2, 7, 7]
    store.turn_seq = None
    await store.add_items(items(user("g")))
    assert await db.fetchval("SELECT max(turn_seq) FROM llm_context WHERE session_id = $1", store.session_id) == 8


async def test_pop_item_removes_the_newest(store: PostgresSession) -> None:
    assert await store.pop_item() is None
    await store.add_items(items(user("a"), assistant("b")))
    assert await store.pop_item() == assistant("b")
    assert await store.get_items() == [user("a")]


async def test_clear_session_forgets_items_and_summary(store: PostgresSession, db: asyncpg.Connection) -> None:
    await store.add_items(items(user("a"), assistant("b")))
    await db.execute(
        "UPDATE sessions SET summary = 's', summarized_through_seq = 1, context_tokens = 9 WHERE id = $1",
        store.session_id,
    )
    await store.clear_session()
    assert await store.get_items() == []
    state = await store.state()
    assert (state.summary, state.summarized_through_seq, state.context_tokens) == (None, None, 0)


async def test_sessions_do_not_see_each_other(
    store: PostgresSession, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    _, other_id = await make_session(db)
    other = PostgresSession(pool, other_id, counter=WordCounter())
    await store.add_items(items(user("mine")))
    await other.add_items(items(user("theirs")))
    assert await store.get_items() == [user("mine")]
    await other.clear_session()
    assert await store.get_items() == [user("mine")]


async def test_repair_closes_dangling_calls_right_after_their_block(store: PostgresSession) -> None:
    await store.add_items(items(user("q"), call("c1"), call("c2"), output("c1", "one")))
    await store.add_items(items(assistant("partial answer")))

    closed = await store.repair()

    assert closed == ["c2"]
    assert await store.get_items() == [
        user("q"),
        call("c1"),
        call("c2"),
        output("c2", "interrupted"),
        output("c1", "one"),
        assistant("partial answer"),
    ]
    assert await store.repair() == []


async def test_repair_keeps_turns_and_counts(store: PostgresSession, pool: asyncpg.Pool) -> None:
    store.turn_seq = 3
    await store.add_items(items(user("q"), call("c1"), assistant("after")))
    await store.repair()
    rows = await pool.fetch(
        "SELECT item, tokens, turn_seq FROM llm_context WHERE session_id = $1 ORDER BY id", store.session_id
    )
    assert [(r["item"].get("type"), r["tokens"], r["turn_seq"]) for r in rows] == [
        ("message", 3, 3),
        ("function_call", 5, 3),
        ("function_call_output", 4, 3),
        ("message", 3, 3),
    ]


async def test_add_partial_turn_writes_what_the_sdk_dropped(store: PostgresSession) -> None:
    # The SDK stored the user message at the start of the run, then the run was cancelled mid-tool.
    await store.add_items(items(user("weather?")))
    closed = await store.add_partial_turn(
        [user("weather?"), function_call("slow", "{}", call_id="c1"), assistant("Let me")]
    )
    assert closed == ["c1"]
    got = await store.get_items()
    assert [i.get("type") for i in got] == ["message", "function_call", "function_call_output", "message"]
    assert got[2] == output("c1", "interrupted")
    assert await store.add_partial_turn([function_call("slow", "{}", call_id="c1")]) == []
    assert len(await store.get_items()) == 4


async def test_a_hand_built_partial_answer_is_stored_in_a_replayable_form(store: PostgresSession) -> None:
    partial = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Half an ans"}]}
    await store.add_partial_turn([user("q"), partial])
    assert await store.get_items() == [user("q"), {"type": "message", "role": "assistant", "content": "Half an ans"}]
