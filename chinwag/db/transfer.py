"""SQL of export and import: a session's messages read in keyset batches (never all at once), and an imported
session's messages written in one statement."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chinwag.db.messages import MESSAGE_COLUMNS, storable_text
from chinwag.db.sessions import Executor


async def message_batch(
    db: Executor, *, session_id: uuid.UUID, after_seq: int, limit: int, active_branch: bool
) -> list[dict[str, Any]]:
    """Up to `limit` messages after `after_seq`, in seq order, as `Message` dicts (JSON-ready but for the time):
    every branch, or only the active one."""
    if active_branch:
        rows = await db.fetch(
            "SELECT " + MESSAGE_COLUMNS + " FROM messages m WHERE m.session_id = $1 AND m.on_branch AND m.seq > $2"
            " ORDER BY m.seq LIMIT $3",
            session_id,
            after_seq,
            limit,
        )
    else:
        rows = await db.fetch(
            "SELECT " + MESSAGE_COLUMNS + " FROM messages m WHERE m.session_id = $1 AND m.seq > $2"
            " ORDER BY m.seq LIMIT $3",
            session_id,
            after_seq,
            limit,
        )
    return [dict(row) for row in rows]


async def file_metadata(db: Executor, *, session_id: uuid.UUID) -> list[dict[str, Any]]:
    """The session's files as `{name, content_type, size, sha256}` (what an export carries: no bytes)."""
    rows = await db.fetch(
        "SELECT name, content_type, size, sha256 FROM files WHERE session_id = $1 ORDER BY created_at, id", session_id
    )
    return [dict(row) for row in rows]


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message of an imported session, its place in the tree already checked."""

    seq: int
    parent_seq: int | None
    role: str
    content: str
    status: str
    tool: dict[str, Any] | None
    usage: dict[str, Any] | None
    finish_reason: str | None
    created_at: datetime | None
    on_branch: bool
    reasoning: str | None = None


async def insert_messages(
    db: Executor, *, session_id: uuid.UUID, messages: list[NewMessage], leaf_seq: int | None
) -> None:
    """Write an imported session's messages (new ids) and set its counters; one statement each."""
    if messages:
        await db.execute(
            "INSERT INTO messages (session_id, seq, parent_seq, role, content, status, tool, usage, finish_reason,"
            " created_at, on_branch, reasoning)"
            " SELECT $1, r.seq, r.parent_seq, r.role, r.content, r.status, r.tool, r.usage, r.finish_reason,"
            " coalesce(r.created_at, now()), r.on_branch, r.reasoning"
            " FROM unnest($2::integer[], $3::integer[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::jsonb[],"
            " $9::text[], $10::timestamptz[], $11::boolean[], $12::text[])"
            " AS r(seq, parent_seq, role, content, status, tool, usage, finish_reason, created_at, on_branch,"
            " reasoning)",
            session_id,
            [m.seq for m in messages],
            [0 if m.parent_seq is None else m.parent_seq for m in messages],
            [m.role for m in messages],
            [storable_text(m.content) for m in messages],
            [m.status for m in messages],
            [m.tool for m in messages],
            [m.usage for m in messages],
            [m.finish_reason for m in messages],
            [m.created_at for m in messages],
            [m.on_branch for m in messages],
            [None if m.reasoning is None else storable_text(m.reasoning) for m in messages],
        )
    await db.execute(
        "UPDATE sessions SET message_count = $2, leaf_seq = $3, updated_at = now() WHERE id = $1",
        session_id,
        len(messages),
        leaf_seq,
    )
