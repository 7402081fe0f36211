"""Layer 1's read for the model's view: the facts selected in SQL are the ones the items say."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson

from chinwag.db import context as context_db
from chinwag.db.context import item_facts

ITEMS: list[dict[str, Any]] = [
    {"role": "user", "content": "no type"},
    {"type": "message", "role": "user", "content": "typed"},
    {"type": "message", "role": "system", "content": "summary"},
    {"type": None, "role": "user", "content": "type null"},
    {"type": "message", "role": 5, "content": "role not a string"},
    {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "c1", "output": "ok"},
    {"type": "custom_tool_call", "call_id": 7, "name": "g", "input": ""},
    {"type": "computer_call", "call_id": "c%_2", "action": {}},
    {"type": "computer_call_output", "call_id": "c%_2", "output": {}},
    {"type": "reasoning", "summary": []},
    {"type": "function_callx", "call_id": "c3"},
    {"type": "message", "role": "assistant", "call_id": "c4", "content": []},
]


async def test_the_facts_selected_in_sql_are_the_items_own(db: asyncpg.Connection) -> None:
    """Grouping and pairing read these facts instead of the item: they must say what the item says."""
    user_id, session_id = uuid.uuid4(), uuid.uuid4()
    await db.execute(
        "INSERT INTO users (id, email, password_hash, display_name) VALUES ($1, $2, 'x', 'x')",
        user_id,
        f"{user_id}@example.com",
    )
    await db.execute("INSERT INTO sessions (id, user_id, title, model) VALUES ($1, $2, 't', 'm')", session_id, user_id)
    for turn, item in enumerate(ITEMS, start=1):
        await db.execute(
            "INSERT INTO llm_context (session_id, item, tokens, turn_seq) VALUES ($1, $2::jsonb, 1, $3)",
            session_id,
            orjson.dumps(item).decode(),
            turn,
        )
    found = await context_db.unsummarized(db, session_id=str(session_id))
    assert found is not None
    rows = found[1]
    assert [row.raw is not None for row in rows] == [True] * len(ITEMS)  # not decoded for reading facts
    assert [(row.role, row.call_id, row.output_id) for row in rows] == [item_facts(item) for item in ITEMS]
    assert [row.item for row in rows] == ITEMS
