"""SQL of branches: which branch of a session's message tree is active (`sessions.leaf_seq`, `messages.on_branch`).

A switch is one transaction: the session row is locked (so no message is appended meanwhile: appends lock it too),
the new branch's messages below the fork point are found by walking up from the new leaf only as far as the first
message already on the active branch, the flags of the old part are cleared and those of the new part set, and a
summary that covers a message whose flag changed is dropped (Layer 1 summarizes the new branch again as needed).
Paging then reads `on_branch` under its partial index: the tree is walked per switch, never per page.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from chinwag.db.messages import MESSAGE_COLUMNS, RETURNING_NEW, storable_text
from chinwag.schemas.messages import Message

Conn = asyncpg.Connection | PoolConnectionProxy
"""One connection, inside a transaction held by the caller."""

_WALK_UP = (
    "WITH RECURSIVE up(seq, parent, on_branch) AS ("
    " SELECT seq, coalesce(parent_seq, seq - 1), on_branch FROM messages WHERE session_id = $1 AND seq = $2"
    " UNION ALL"
    " SELECT m.seq, coalesce(m.parent_seq, m.seq - 1), m.on_branch FROM up"
    " JOIN messages m ON m.session_id = $1 AND m.seq = up.parent WHERE NOT up.on_branch)"
    " SELECT seq, on_branch FROM up"
)
_NEWEST_BELOW = (
    "WITH RECURSIVE down(seq) AS ("
    " SELECT seq FROM messages WHERE session_id = $1 AND seq = $2"
    " UNION ALL"
    " SELECT m.seq FROM down JOIN messages m ON m.session_id = $1 AND coalesce(m.parent_seq, m.seq - 1) = down.seq)"
    " SELECT max(seq) FROM down"
)


@dataclass(frozen=True, slots=True)
class LockedSession:
    """The branch columns of a session row locked by `lock_session`."""

    leaf_seq: int | None
    running: bool
    """A run of the session is running (any worker): the branch may not change."""


async def lock_session(conn: Conn, *, session_id: uuid.UUID, user_id: uuid.UUID | None = None) -> LockedSession | None:
    """Lock the session row (FOR UPDATE) and say whether a run is running; None if it is not found (or, with
    `user_id`, not that user's). A run that starts meanwhile waits for this lock, then hangs under the new leaf."""
    row = await conn.fetchrow(
        "SELECT s.leaf_seq, EXISTS (SELECT 1 FROM runs r WHERE r.session_id = s.id AND r.status = 'running') AS running"
        " FROM sessions s WHERE s.id = $1 AND ($2::uuid IS NULL OR s.user_id = $2) FOR UPDATE OF s",
        session_id,
        user_id,
    )
    return None if row is None else LockedSession(leaf_seq=row["leaf_seq"], running=row["running"])


async def newest_leaf_below(conn: Conn, *, session_id: uuid.UUID, seq: int) -> int | None:
    """The newest message below `seq` (itself included): a leaf, since its children would be newer. None if `seq`
    is not in the session."""
    value: int | None = await conn.fetchval(_NEWEST_BELOW, session_id, seq)
    return value


async def set_leaf(conn: Conn, *, session_id: uuid.UUID, leaf: int | None) -> None:
    """Make the branch ending at `leaf` (None: no message at all) the active one, in the caller's transaction (the
    session row locked by `lock_session`)."""
    fork = 0
    newly_on: list[int] = []
    if leaf is not None:
        for row in await conn.fetch(_WALK_UP, session_id, leaf):
            if row["on_branch"]:
                fork = row["seq"]
            else:
                newly_on.append(row["seq"])
    first_off: int | None = await conn.fetchval(
        "WITH off AS (UPDATE messages SET on_branch = false WHERE session_id = $1 AND on_branch AND seq > $2"
        " RETURNING seq) SELECT min(seq) FROM off",
        session_id,
        fork,
    )
    if newly_on:
        await conn.execute(
            "UPDATE messages SET on_branch = true WHERE session_id = $1 AND seq = ANY($2::integer[])",
            session_id,
            newly_on,
        )
    changed = min([s for s in (first_off, min(newly_on, default=None)) if s is not None], default=None)
    # A summary (or a failed attempt's boundary) that reaches a message whose flag changed speaks of another branch.
    await conn.execute(
        "UPDATE sessions SET leaf_seq = $2, updated_at = now(),"
        " summary = CASE WHEN summarized_through_seq >= $3 THEN NULL ELSE summary END,"
        " summarized_through_seq = CASE WHEN summarized_through_seq >= $3 THEN NULL ELSE summarized_through_seq END,"
        " summary_failed_through_seq = CASE WHEN summary_failed_through_seq >= $3 THEN NULL"
        " ELSE summary_failed_through_seq END"
        " WHERE id = $1",
        session_id,
        leaf,
        changed,
    )


@dataclass(frozen=True, slots=True)
class BranchMessage:
    """A message's place in the tree, as `edit` and `regenerate` check it."""

    message: Message
    on_branch: bool
    parent: int | None


async def get_message(conn: Conn, *, session_id: uuid.UUID, seq: int) -> BranchMessage | None:
    row = await conn.fetchrow(
        "SELECT " + MESSAGE_COLUMNS + ", m.on_branch FROM messages m WHERE m.session_id = $1 AND m.seq = $2",
        session_id,
        seq,
    )
    if row is None:
        return None
    values = dict(row)
    on_branch = values.pop("on_branch")
    message = Message.model_validate(values)
    return BranchMessage(message=message, on_branch=on_branch, parent=message.parent_seq)


async def last_user_seq(conn: Conn, *, session_id: uuid.UUID) -> int | None:
    """The seq of the last user message on the active branch."""
    value: int | None = await conn.fetchval(
        "SELECT seq FROM messages WHERE session_id = $1 AND on_branch AND role = 'user' ORDER BY seq DESC LIMIT 1",
        session_id,
    )
    return value


async def insert_run(
    conn: Conn,
    *,
    run_id: uuid.UUID,
    session_id: uuid.UUID,
    client_id: str | None,
    owner: str | None,
    user_message_id: uuid.UUID,
) -> None:
    """Take the run slot (raises `asyncpg.UniqueViolationError` on `runs_one_running_idx` or `runs_client_id_idx`)
    and show the run as the session's active one."""
    await conn.execute(
        "INSERT INTO runs (id, session_id, client_id, owner, heartbeat_at, user_message_id)"
        " VALUES ($1, $2, $3, $4, now(), $5)",
        run_id,
        session_id,
        client_id,
        owner,
        user_message_id,
    )
    await conn.execute("UPDATE sessions SET active_run_id = $2, updated_at = now() WHERE id = $1", session_id, run_id)


async def append_user_message(
    conn: Conn, *, message_id: uuid.UUID, session_id: uuid.UUID, run_id: uuid.UUID, content: str, client_id: str | None
) -> Message:
    """Append a user message under the session's leaf (set by `set_leaf` just before), as the new leaf."""
    row = await conn.fetchrow(
        "WITH s AS ("
        " UPDATE sessions s SET message_count = s.message_count + 1, leaf_seq = s.message_count + 1, updated_at = now()"
        " FROM (SELECT id, leaf_seq FROM sessions WHERE id = $2) o WHERE s.id = o.id"
        " RETURNING s.message_count, coalesce(o.leaf_seq, 0) AS parent)"
        " INSERT INTO messages AS m (id, session_id, seq, parent_seq, role, content, status, run_id, client_id)"
        " SELECT $1, $2, s.message_count, s.parent, 'user', $3, 'complete', $4, $5 FROM s" + RETURNING_NEW,
        message_id,
        session_id,
        storable_text(content),
        run_id,
        None if client_id is None else storable_text(client_id),
    )
    assert row is not None
    return Message.from_record(row)
