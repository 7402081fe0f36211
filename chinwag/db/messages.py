"""SQL of the `messages` table (Layer 2: everything the user saw) and of the session counters it moves.

`append_message` is what the chat service calls while a run streams: it allocates `seq` from
`sessions.message_count` under that row's lock, in the same statement as the insert, so concurrent appends to one
session get 1, 2, 3, ... without a gap, and a failed insert allocates nothing.
"""

from __future__ import annotations

import uuid

import asyncpg

from chinwag.db.sessions import Executor
from chinwag.schemas.messages import Message, MessagePage, MessageStatus, Role, SearchHit, ToolCall
from chinwag.schemas.sessions import TokenUsage

# `Message`'s fields, in order (`MessagePage.encode_records` relies on it).
_RETURNING = (
    " RETURNING id::text AS id, seq, role, content, status, tool, run_id::text AS run_id, client_id, usage,"
    " finish_reason, reasoning, created_at"
)
_APPEND = (
    "WITH s AS ("
    " UPDATE sessions SET message_count = message_count + 1, updated_at = now() WHERE id = $1"
    " RETURNING message_count)"
    " INSERT INTO messages (session_id, seq, role, content, status, tool, run_id, client_id, usage)"
    " SELECT $1, s.message_count, $2, $3, $4, $5, $6, $7, $8 FROM s" + _RETURNING
)

# History pages: keyset on the (session_id, seq) unique index, never OFFSET; one row more than asked says has_more.
# The ownership check rides along: the session row is found by id and user, and its page joined to it laterally, so
# one round trip answers both "is it yours?" (no row at all) and the page (a row of NULLs when it is empty).
# Public so that bench/history.py can EXPLAIN exactly what the server runs.
PAGE_NEWEST = (
    "SELECT m.id::text AS id, m.seq, m.role, m.content, m.status, m.tool, m.run_id::text AS run_id, m.client_id,"
    " m.usage, m.finish_reason, m.reasoning, m.created_at FROM sessions s LEFT JOIN LATERAL ("
    " SELECT id, seq, role, content, status, tool, run_id, client_id, usage, finish_reason, reasoning, created_at"
    " FROM messages"
    " WHERE session_id = s.id ORDER BY seq DESC LIMIT $3) m ON true"
    " WHERE s.id = $1 AND s.user_id = $2"
)
PAGE_BEFORE = (
    "SELECT m.id::text AS id, m.seq, m.role, m.content, m.status, m.tool, m.run_id::text AS run_id, m.client_id,"
    " m.usage, m.finish_reason, m.reasoning, m.created_at FROM sessions s LEFT JOIN LATERAL ("
    " SELECT id, seq, role, content, status, tool, run_id, client_id, usage, finish_reason, reasoning, created_at"
    " FROM messages"
    " WHERE session_id = s.id AND seq < $3 ORDER BY seq DESC LIMIT $4) m ON true"
    " WHERE s.id = $1 AND s.user_id = $2"
)
PAGE_AFTER = (
    "SELECT m.id::text AS id, m.seq, m.role, m.content, m.status, m.tool, m.run_id::text AS run_id, m.client_id,"
    " m.usage, m.finish_reason, m.reasoning, m.created_at FROM sessions s LEFT JOIN LATERAL ("
    " SELECT id, seq, role, content, status, tool, run_id, client_id, usage, finish_reason, reasoning, created_at"
    " FROM messages"
    " WHERE session_id = s.id AND seq > $3 ORDER BY seq LIMIT $4) m ON true"
    " WHERE s.id = $1 AND s.user_id = $2"
)


def storable_text(text: str) -> str:
    """Text PostgreSQL can store: NUL and unpaired surrogates (a model may emit them) become U+FFFD."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
    return text


def _tool_json(tool: ToolCall | None) -> dict[str, object] | None:
    if tool is None:
        return None
    return {k: storable_text(v) if isinstance(v, str) else v for k, v in tool.model_dump().items()}


async def append_message(
    db: Executor,
    *,
    session_id: str | uuid.UUID,
    role: Role,
    content: str,
    status: MessageStatus = "complete",
    tool: ToolCall | None = None,
    run_id: str | uuid.UUID | None = None,
    client_id: str | None = None,
    usage: TokenUsage | None = None,
) -> Message:
    """Append a message to a session with the next `seq`; bumps the session's `message_count` and `updated_at`.

    Raises `LookupError` if the session does not exist (deleted meanwhile, say).
    """
    row = await db.fetchrow(
        _APPEND,
        session_id,
        role,
        storable_text(content),
        status,
        _tool_json(tool),
        run_id,
        None if client_id is None else storable_text(client_id),
        None if usage is None else usage.model_dump(),
    )
    if row is None:
        raise LookupError(f"session {session_id} does not exist")
    return Message.from_record(row)


async def update_message(
    db: Executor,
    *,
    message_id: str | uuid.UUID,
    content: str,
    status: MessageStatus,
    usage: TokenUsage | None = None,
    tool: ToolCall | None = None,
    finish_reason: str | None = None,
    reasoning: str | None = None,
) -> Message | None:
    """Rewrite a message's content and status (a streaming checkpoint, the end of a run); `usage`, `tool`,
    `finish_reason` and `reasoning` are left as they are when None. Returns None if the message is gone."""
    row = await db.fetchrow(
        "UPDATE messages SET content = $2, status = $3, usage = coalesce($4, usage), tool = coalesce($5, tool),"
        " finish_reason = coalesce($6, finish_reason), reasoning = coalesce($7, reasoning), updated_at = now()"
        " WHERE id = $1" + _RETURNING,
        message_id,
        storable_text(content),
        status,
        None if usage is None else usage.model_dump(),
        _tool_json(tool),
        finish_reason,
        None if reasoning is None else storable_text(reasoning),
    )
    return None if row is None else Message.from_record(row)


async def set_status(db: Executor, *, message_id: uuid.UUID, status: MessageStatus) -> None:
    """Only the status of a streaming message (its end, when its content could not be written)."""
    await db.execute(
        "UPDATE messages SET status = $2, updated_at = now() WHERE id = $1 AND status = 'streaming'", message_id, status
    )


async def end_streaming(db: Executor, *, run_id: uuid.UUID, status: MessageStatus) -> None:
    """Whatever a run left `streaming` (its answer, if no write reached it) gets its end status."""
    await db.execute(
        "UPDATE messages SET status = $2, updated_at = now() WHERE run_id = $1 AND status = 'streaming'", run_id, status
    )


async def add_usage(
    db: Executor,
    *,
    session_id: str | uuid.UUID,
    input_tokens: int,
    output_tokens: int,
    context_tokens: int | None = None,
) -> None:
    """Add a run's token usage to the session's totals and, if given, set the size of its next context."""
    await db.execute(
        "UPDATE sessions SET input_tokens = input_tokens + $2, output_tokens = output_tokens + $3,"
        " context_tokens = coalesce($4, context_tokens) WHERE id = $1",
        session_id,
        input_tokens,
        output_tokens,
        context_tokens,
    )


async def _fetch_page(
    db: Executor, *, user_id: uuid.UUID, session_id: uuid.UUID, limit: int, before: int | None, after: int | None
) -> tuple[list[asyncpg.Record], bool] | None:
    if after is not None:
        rows = await db.fetch(PAGE_AFTER, session_id, user_id, after, limit + 1)
    elif before is not None:
        rows = await db.fetch(PAGE_BEFORE, session_id, user_id, before, limit + 1)
    else:
        rows = await db.fetch(PAGE_NEWEST, session_id, user_id, limit + 1)
    if not rows:
        return None
    if rows[0]["id"] is None:  # the session, without messages in that direction
        return [], False
    # The lateral join emits rows in the inner order in practice, but SQL promises nothing: order them here.
    ordered = sorted(rows, key=lambda r: r["seq"])
    has_more = len(ordered) > limit
    if has_more:
        ordered = ordered[1:] if after is None else ordered[:limit]
    return ordered, has_more


async def page_messages(
    db: Executor,
    *,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    limit: int,
    before: int | None = None,
    after: int | None = None,
) -> tuple[list[Message], bool] | None:
    """A page of a session's history, oldest first, and whether more exist in the direction asked; None if the
    session is not `user_id`'s. `before`/`after` are seqs (excluded); neither: the newest page."""
    page = await _fetch_page(db, user_id=user_id, session_id=session_id, limit=limit, before=before, after=after)
    if page is None:
        return None
    rows, has_more = page
    return Message.from_records(rows), has_more


async def page_messages_json(
    db: Executor,
    *,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    limit: int,
    before: int | None = None,
    after: int | None = None,
) -> bytes | None:
    """`page_messages`, already encoded as `MessagePage` JSON: the history route's hot path (see
    `MessagePage.encode_records`)."""
    page = await _fetch_page(db, user_id=user_id, session_id=session_id, limit=limit, before=before, after=after)
    if page is None:
        return None
    rows, has_more = page
    return MessagePage.encode_records(rows, has_more=has_more)


async def search_messages(db: Executor, *, user_id: uuid.UUID, query: str, limit: int) -> list[SearchHit]:
    """Full-text search over the messages of `user_id`'s sessions, best match first, newest first among equals.

    `websearch_to_tsquery` accepts any text (quotes, `or`, `-word`) without syntax errors.
    """
    rows = await db.fetch(
        "SELECT hit.session_id, hit.id, hit.seq,"
        " ts_headline('simple', hit.content, q, 'MaxWords=35, MinWords=15, MaxFragments=2,"
        ' StartSel="", StopSel="", FragmentDelimiter=" ... "\') AS snippet'
        " FROM websearch_to_tsquery('simple', $2) AS q,"
        " LATERAL (SELECT m.session_id, m.id, m.seq, m.content FROM messages m"
        "  JOIN sessions s ON s.id = m.session_id"
        "  WHERE s.user_id = $1 AND m.search @@ q"
        "  ORDER BY ts_rank(m.search, q) DESC, m.created_at DESC, m.id LIMIT $3) AS hit",
        user_id,
        query,
        limit,
    )
    return [
        SearchHit(session_id=str(r["session_id"]), message_id=str(r["id"]), seq=r["seq"], snippet=r["snippet"])
        for r in rows
    ]
