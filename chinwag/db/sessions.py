"""SQL of the `sessions` table. Rows become `Session`s here; nothing past this module sees a record."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from chinwag.schemas.sessions import Session

Executor = asyncpg.Connection | asyncpg.Pool | PoolConnectionProxy
"""Anything that runs one statement: a connection (inside a transaction, say) or the pool."""

ContextWindow = Callable[[str], int]
"""Model id -> the model's context window in tokens (`Session.context.limit`)."""

ListKey = tuple[bool, datetime, uuid.UUID]
"""A position in the session list order: (pinned, updated_at, id), all descending."""

# Every statement is a literal (the column list written out each time): no SQL is ever composed at run time.
# The list queries are public so that bench/history.py can EXPLAIN exactly what the server runs.
_INSERT = (
    "INSERT INTO sessions (user_id, title, model, instructions, mcp_servers, settings)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
    " RETURNING id::text AS id, title, model, instructions, mcp_servers, settings, pinned, message_count,"
    " input_tokens, output_tokens, context_tokens, active_run_id::text AS active_run_id, created_at, updated_at"
)
GET_ONE = (
    "SELECT id::text AS id, title, model, instructions, mcp_servers, settings, pinned, message_count,"
    " input_tokens, output_tokens, context_tokens, active_run_id::text AS active_run_id, created_at, updated_at"
    " FROM sessions WHERE id = $1 AND user_id = $2"
)
LIST_FIRST = (
    "SELECT id::text AS id, title, model, instructions, mcp_servers, settings, pinned, message_count,"
    " input_tokens, output_tokens, context_tokens, active_run_id::text AS active_run_id, created_at, updated_at"
    " FROM sessions WHERE user_id = $1"
    " ORDER BY sessions.pinned DESC, sessions.updated_at DESC, sessions.id DESC LIMIT $2"
)
# A row comparison on the index's own column order: the scan starts right after the cursor. Columns are qualified
# because `id` alone would name the `id::text` output column, whose order is not the index's.
LIST_AFTER = (
    "SELECT id::text AS id, title, model, instructions, mcp_servers, settings, pinned, message_count,"
    " input_tokens, output_tokens, context_tokens, active_run_id::text AS active_run_id, created_at, updated_at"
    " FROM sessions WHERE user_id = $1 AND (sessions.pinned, sessions.updated_at, sessions.id) < ($2, $3, $4)"
    " ORDER BY sessions.pinned DESC, sessions.updated_at DESC, sessions.id DESC LIMIT $5"
)
# Each column is set only when its flag is true, so one statement serves every PATCH.
_UPDATE = (
    "UPDATE sessions SET"
    " title = CASE WHEN $3 THEN $4::text ELSE title END,"
    " pinned = CASE WHEN $5 THEN $6::boolean ELSE pinned END,"
    " model = CASE WHEN $7 THEN $8::text ELSE model END,"
    " instructions = CASE WHEN $9 THEN $10::text ELSE instructions END,"
    " mcp_servers = CASE WHEN $11 THEN $12::text[] ELSE mcp_servers END,"
    # Settings merge: the keys sent replace theirs, a key sent as null is dropped (the provider's default again).
    " settings = CASE WHEN $13 THEN jsonb_strip_nulls(settings || $14::jsonb) ELSE settings END,"
    " updated_at = now()"
    " WHERE id = $1 AND user_id = $2"
    " RETURNING id::text AS id, title, model, instructions, mcp_servers, settings, pinned, message_count,"
    " input_tokens, output_tokens, context_tokens, active_run_id::text AS active_run_id, created_at, updated_at"
)
OWNED = "SELECT true FROM sessions WHERE id = $1 AND user_id = $2"
_UPDATABLE = ("title", "pinned", "model", "instructions", "mcp_servers", "settings")


async def insert_session(
    db: Executor,
    *,
    user_id: uuid.UUID,
    title: str,
    model: str,
    instructions: str,
    mcp_servers: list[str] | None,
    window: ContextWindow,
    settings: Mapping[str, Any] | None = None,
) -> Session:
    row = await db.fetchrow(_INSERT, user_id, title, model, instructions, mcp_servers, dict(settings or {}))
    assert row is not None
    return Session.from_record(row, context_limit=window(row["model"]))


async def get_session(
    db: Executor, *, user_id: uuid.UUID, session_id: uuid.UUID, window: ContextWindow
) -> Session | None:
    """The session if it exists and belongs to `user_id`."""
    row = await db.fetchrow(GET_ONE, session_id, user_id)
    return None if row is None else Session.from_record(row, context_limit=window(row["model"]))


async def session_owned(db: Executor, *, user_id: uuid.UUID, session_id: uuid.UUID) -> bool:
    """Whether the session exists and belongs to `user_id` (cheaper than `get_session`)."""
    found = await db.fetchval(OWNED, session_id, user_id)
    return found is not None


async def list_sessions(
    db: Executor, *, user_id: uuid.UUID, limit: int, after: ListKey | None, window: ContextWindow
) -> tuple[list[Session], bool]:
    """Up to `limit` sessions after `after` in list order (pinned first, then most recently active), and whether
    more follow. Keyset on the `sessions_list_idx` index: as fast deep down as on the first page."""
    if after is None:
        rows = await db.fetch(LIST_FIRST, user_id, limit + 1)
    else:
        rows = await db.fetch(LIST_AFTER, user_id, *after, limit + 1)
    sessions = Session.from_records(rows[:limit], window=window)
    return sessions, len(rows) > limit


async def update_session(
    db: Executor,
    *,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    changes: Mapping[str, Any],
    window: ContextWindow,
) -> Session | None:
    """Set the given columns (a subset of `_UPDATABLE`; `settings` is merged key by key); None if not found."""
    unknown = set(changes).difference(_UPDATABLE)
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    values: list[Any] = []
    for name in _UPDATABLE:
        values += [name in changes, changes.get(name)]
    row = await db.fetchrow(_UPDATE, session_id, user_id, *values)
    return None if row is None else Session.from_record(row, context_limit=window(row["model"]))


async def delete_session(db: Executor, *, user_id: uuid.UUID, session_id: uuid.UUID) -> list[str] | None:
    """Delete the session; its messages, context, runs and file rows go with it (ON DELETE CASCADE).

    Returns the storage keys of its files (their bytes are the file store's to remove), or None if not found.
    """
    row = await db.fetchrow(
        "WITH gone AS (DELETE FROM sessions WHERE id = $1 AND user_id = $2 RETURNING id)"
        " SELECT (SELECT count(*) FROM gone) AS deleted,"
        " ARRAY(SELECT storage_key FROM files WHERE session_id IN (SELECT id FROM gone)) AS storage_keys",
        session_id,
        user_id,
    )
    assert row is not None
    if row["deleted"] == 0:
        return None
    keys: list[str] = row["storage_keys"]
    return keys
