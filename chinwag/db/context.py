"""SQL of Layer 1: table `llm_context` and the summary columns of `sessions`.

Rows leave this module as `ContextRow` / `ContextState`, never as `asyncpg.Record`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy


class ContextRow:
    """One SDK input item as stored, with its token count and the turn it belongs to.

    A row read for the model's view (`unsummarized`) comes with its item as the JSON text PostgreSQL sent and the
    facts grouping needs (`role`, `call_id`, `output_id`), selected in SQL: its item is decoded only when something
    reads it (`item`), so a row whose request JSON is cached (`chinwag.llm.history`) costs no JSON decode at all.
    """

    __slots__ = ("_item", "_raw", "call_id", "exact", "id", "message_seq", "output_id", "role", "tokens", "turn_seq")

    def __init__(
        self,
        id: int,
        item: dict[str, Any] | None = None,
        tokens: int = 0,
        turn_seq: int | None = None,
        message_seq: int | None = None,
        exact: bool = False,
        *,
        raw: str | None = None,
        facts: tuple[str | None, str | None, str | None] | None = None,
    ) -> None:
        if (item is None) == (raw is None):
            raise TypeError("a ContextRow needs its item or its raw JSON, not both")
        self.id = id
        self.tokens = tokens
        self.turn_seq = turn_seq
        self.message_seq = message_seq
        """The Layer 2 message the item belongs to (the user message for the user's input, the run's assistant
        message for what the run produced): the item is in the model's view while that message is on the active
        branch."""
        self.exact = exact
        """`tokens` is the provider's count (calibrated from a run's usage), not an offline estimate."""
        self._item = item
        self._raw = raw
        role, call_id, output_id = facts if facts is not None else item_facts(item or {})
        self.role = role
        """The role of a message item (`type` "message" or absent, `role` a string); None for any other item."""
        self.call_id = call_id
        """The call id of a tool call that expects an output (`call_id_of_call`)."""
        self.output_id = output_id
        """The call id a tool output answers (`call_id_of_output`)."""

    @property
    def item(self) -> dict[str, Any]:
        item = self._item
        if item is None:
            item = self._item = orjson.loads(self._raw or "null")
            self._raw = None
        return item

    @property
    def raw(self) -> str | None:
        """The item's JSON text as read, while it has not been decoded."""
        return self._raw

    def with_tokens(self, tokens: int) -> ContextRow:
        """The same row with a count made exact."""
        if self._item is not None:
            return ContextRow(self.id, self._item, tokens, self.turn_seq, self.message_seq, True)
        facts = (self.role, self.call_id, self.output_id)
        return ContextRow(self.id, None, tokens, self.turn_seq, self.message_seq, True, raw=self._raw, facts=facts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ContextRow):
            return NotImplemented
        mine = (self.id, self.tokens, self.turn_seq, self.message_seq, self.exact)
        theirs = (other.id, other.tokens, other.turn_seq, other.message_seq, other.exact)
        return mine == theirs and self.item == other.item

    def __repr__(self) -> str:
        return f"ContextRow(id={self.id!r}, tokens={self.tokens!r}, turn_seq={self.turn_seq!r}, role={self.role!r})"

    @classmethod
    def from_record(cls, row: asyncpg.Record) -> ContextRow:
        return cls(
            id=row["id"],
            item=row["item"],
            tokens=row["tokens"],
            turn_seq=row["turn_seq"],
            message_seq=row["message_seq"],
            exact=row["tokens_exact"],
        )


def item_facts(item: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """`(role, call id of a call, call id of an output)` of an item, as `_FACTS` selects them in SQL."""
    kind = item.get("type", "message")
    role = item.get("role")
    call_id = item.get("call_id")
    if kind == "message" and isinstance(role, str):
        return role, None, None
    if isinstance(kind, str) and isinstance(call_id, str):
        if kind.endswith("_call"):
            return None, call_id, None
        if kind.endswith("_call_output"):
            return None, None, call_id
    return None, None, None


@dataclass(frozen=True, slots=True)
class ContextState:
    """The Layer 1 columns of a session: the persisted summary and the last recorded context size."""

    model: str
    summary: str | None
    summarized_through_seq: int | None
    context_tokens: int
    summary_failed_through_seq: int | None = None
    """The boundary of the last summary the model failed to make (not asked for again until the history moves)."""
    version: str | None = None
    """The version of the session row this was read at (its `xmin`: the transaction that last changed it), where
    the read selects it. The same version later means nothing changed the session row in between, and every write
    to a session's Layer 1 or branch changes it or happens in a run whose end does (see `runs.start_with_message`)."""

    @classmethod
    def from_record(cls, row: asyncpg.Record) -> ContextState:
        return cls(
            model=row["model"],
            summary=row["summary"],
            summarized_through_seq=row["summarized_through_seq"],
            context_tokens=row["context_tokens"],
            summary_failed_through_seq=row["summary_failed_through_seq"],
            version=row.get("version"),
        )


Conn = asyncpg.Connection | PoolConnectionProxy | asyncpg.Pool
OneConn = asyncpg.Connection | PoolConnectionProxy

_ROW = "id, item, tokens, turn_seq, message_seq, tokens_exact"
Row = tuple[dict[str, Any], int, int | None, int | None]
"""A row to store: `(item, tokens, turn_seq, message_seq)`."""

# Whether the item of row `i` of session `s` is on the active branch: no message it belongs to is off it. Items
# from before branches (message_seq NULL) belong to their turn's user message (user input) or to the message after
# it (the run's answer); an item without a Layer 2 message at all (a test's) counts as on the branch.
ON_BRANCH = (
    "NOT EXISTS (SELECT 1 FROM messages m WHERE m.session_id = s.id AND NOT m.on_branch AND m.seq ="
    " coalesce(i.message_seq, i.turn_seq + CASE WHEN i.item->>'role' = 'user'"
    " AND coalesce(i.item->>'type', 'message') = 'message' THEN 0 ELSE 1 END))"
)
# `item_facts` in SQL: the role of a message, the call id of a call, the call id of an output.
_FACTS = (
    "CASE WHEN coalesce(i.item->'type', '\"message\"') = '\"message\"' AND jsonb_typeof(i.item->'role') = 'string'"
    " THEN i.item->>'role' END AS role,"
    " CASE WHEN jsonb_typeof(i.item->'call_id') = 'string' AND jsonb_typeof(i.item->'type') = 'string'"
    " AND i.item->>'type' LIKE '%\\_call' THEN i.item->>'call_id' END AS call_id,"
    " CASE WHEN jsonb_typeof(i.item->'call_id') = 'string' AND jsonb_typeof(i.item->'type') = 'string'"
    " AND i.item->>'type' LIKE '%\\_call\\_output' THEN i.item->>'call_id' END AS output_id"
)
_STATE = "model, summary, summarized_through_seq, context_tokens, summary_failed_through_seq"


async def lock_session_turn(conn: OneConn, *, session_id: str) -> int | None:
    """Lock the session row (inside a transaction) and return the turn of its newest item.

    Serializes appends to one session, so turn numbers computed from the tail are not raced.
    """
    await conn.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", session_id)
    turn: int | None = await conn.fetchval(
        "SELECT turn_seq FROM llm_context WHERE session_id = $1 ORDER BY id DESC LIMIT 1", session_id
    )
    return turn


async def insert_items(conn: Conn, *, session_id: str, rows: Sequence[Row]) -> list[int]:
    """Append `(item, tokens, turn_seq)` rows in order; returns their ids."""
    if not rows:
        return []
    records = await conn.fetch(
        """
        INSERT INTO llm_context (session_id, item, tokens, turn_seq, message_seq)
        SELECT $1, r.item, r.tokens, r.turn_seq, r.message_seq
        FROM unnest($2::jsonb[], $3::integer[], $4::integer[], $5::integer[])
            WITH ORDINALITY AS r(item, tokens, turn_seq, message_seq, n)
        ORDER BY r.n
        RETURNING id
        """,
        session_id,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
    )
    return sorted(int(r["id"]) for r in records)


async def append_items(conn: Conn, *, session_id: str, rows: Sequence[Row]) -> list[int] | None:
    """`lock_session_turn` + `insert_items` in one statement (one round trip, no transaction), for rows whose turns
    are known; returns their ids, or None if the session does not exist."""
    if not rows:
        return []
    records = await conn.fetch(
        """
        WITH s AS (SELECT id FROM sessions WHERE id = $1 FOR UPDATE)
        INSERT INTO llm_context (session_id, item, tokens, turn_seq, message_seq)
        SELECT s.id, r.item, r.tokens, r.turn_seq, r.message_seq
        FROM s, unnest($2::jsonb[], $3::integer[], $4::integer[], $5::integer[])
            WITH ORDINALITY AS r(item, tokens, turn_seq, message_seq, n)
        ORDER BY r.n
        RETURNING id
        """,
        session_id,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
    )
    if not records:
        return None
    return sorted(int(r["id"]) for r in records)


async def replace_from(
    conn: OneConn,
    *,
    session_id: str,
    from_id: int,
    rows: Sequence[Row],
) -> list[int]:
    """Replace the items from id `from_id` on with `rows` (in a transaction held by the caller); returns new ids."""
    await conn.execute("DELETE FROM llm_context WHERE session_id = $1 AND id >= $2", session_id, from_id)
    return await insert_items(conn, session_id=session_id, rows=rows)


async def list_items(conn: Conn, *, session_id: str, after_turn_seq: int | None = None) -> list[ContextRow]:
    """Items in order; with `after_turn_seq`, only those of later turns (the ones not summarized)."""
    if after_turn_seq is None:
        records = await conn.fetch(
            f"SELECT {_ROW} FROM llm_context WHERE session_id = $1 ORDER BY id",
            session_id,
        )
    else:
        records = await conn.fetch(
            f"SELECT {_ROW} FROM llm_context WHERE session_id = $1 AND (turn_seq IS NULL OR turn_seq > $2) ORDER BY id",
            session_id,
            after_turn_seq,
        )
    return [ContextRow.from_record(r) for r in records]


async def tail_items(conn: Conn, *, session_id: str, limit: int) -> list[ContextRow]:
    """The newest `limit` items, oldest first."""
    records = await conn.fetch(
        f"SELECT {_ROW} FROM llm_context WHERE session_id = $1 ORDER BY id DESC LIMIT $2",
        session_id,
        limit,
    )
    return [ContextRow.from_record(r) for r in reversed(records)]


async def pop_last(conn: Conn, *, session_id: str) -> ContextRow | None:
    """Delete and return the newest item."""
    record = await conn.fetchrow(
        f"""
        DELETE FROM llm_context
        WHERE id = (SELECT id FROM llm_context WHERE session_id = $1 ORDER BY id DESC LIMIT 1)
        RETURNING {_ROW}
        """,
        session_id,
    )
    return ContextRow.from_record(record) if record is not None else None


async def has_user_item(conn: Conn, *, session_id: str, turn_seq: int) -> bool:
    """Whether the user message that opens turn `turn_seq` is stored (a run that failed early may not have)."""
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM llm_context WHERE session_id = $1 AND turn_seq = $2"
        " AND item->>'role' = 'user' AND coalesce(item->>'type', 'message') = 'message')",
        session_id,
        turn_seq,
    )
    return found


async def clear(conn: OneConn, *, session_id: str) -> None:
    """Forget every item and the summary of a session."""
    async with conn.transaction():
        await conn.execute("DELETE FROM llm_context WHERE session_id = $1", session_id)
        await conn.execute(
            "UPDATE sessions SET summary = NULL, summarized_through_seq = NULL, context_tokens = 0 WHERE id = $1",
            session_id,
        )


async def get_state(conn: Conn, *, session_id: str, user_id: str | None = None) -> ContextState | None:
    """The Layer 1 columns of a session; with `user_id`, only when that user owns it."""
    if user_id is None:
        record = await conn.fetchrow(f"SELECT {_STATE} FROM sessions WHERE id = $1", session_id)
    else:
        record = await conn.fetchrow(
            f"SELECT {_STATE} FROM sessions WHERE id = $1 AND user_id = $2",
            session_id,
            user_id,
        )
    return ContextState.from_record(record) if record is not None else None


async def unsummarized(conn: Conn, *, session_id: str) -> tuple[ContextState, list[ContextRow]] | None:
    """`get_state` (with the session row's `version`) and the items of the active branch its summary does not cover
    (after `summarized_through_seq`), in one statement: one round trip, one snapshot. None if the session does not
    exist."""
    records = await conn.fetch(
        "SELECT s.model, s.summary, s.summarized_through_seq, s.context_tokens, s.summary_failed_through_seq,"
        " s.xmin::text AS version,"
        " i.id, i.raw, i.tokens, i.turn_seq, i.message_seq, i.tokens_exact, i.role, i.call_id, i.output_id"
        " FROM sessions s LEFT JOIN LATERAL ("
        " SELECT i.id, i.item::text AS raw, i.tokens, i.turn_seq, i.message_seq, i.tokens_exact, " + _FACTS + ""
        " FROM llm_context i WHERE i.session_id = s.id"
        " AND (s.summarized_through_seq IS NULL OR i.turn_seq IS NULL OR i.turn_seq > s.summarized_through_seq)"
        " AND " + ON_BRANCH + ") i ON true"
        " WHERE s.id = $1 ORDER BY i.id",
        session_id,
    )
    if not records:
        return None
    # The items stay JSON text (decoded when read: most are in the history cache already); grouping and fitting
    # use the facts selected beside them.
    rows = [
        ContextRow(r[6], None, r[8], r[9], r[10], r[11], raw=r[7], facts=(r[12], r[13], r[14]))
        for r in records
        if r[6] is not None
    ]
    return ContextState.from_record(records[0]), rows


async def save_summary(
    conn: Conn,
    *,
    session_id: str,
    summary: str,
    through_seq: int,
    expected_through_seq: int | None,
) -> bool:
    """Store a new summary unless another writer moved the boundary since it was read."""
    status: str = await conn.execute(
        """
        UPDATE sessions SET summary = $2, summarized_through_seq = $3, summary_failed_through_seq = NULL
        WHERE id = $1 AND summarized_through_seq IS NOT DISTINCT FROM $4
        """,
        session_id,
        summary,
        through_seq,
        expected_through_seq,
    )
    return status == "UPDATE 1"


async def set_summary_failed(conn: Conn, *, session_id: str, through_seq: int) -> None:
    await conn.execute("UPDATE sessions SET summary_failed_through_seq = $2 WHERE id = $1", session_id, through_seq)


async def set_context_tokens(conn: Conn, *, session_id: str, tokens: int) -> None:
    await conn.execute("UPDATE sessions SET context_tokens = $2 WHERE id = $1", session_id, tokens)


async def set_item_tokens(conn: Conn, *, updates: Sequence[tuple[int, int]]) -> None:
    """Replace the token counts of items `(id, tokens)` with the provider's numbers (marked exact), in one
    statement."""
    if updates:
        await conn.execute(
            "UPDATE llm_context AS c SET tokens = u.tokens, tokens_exact = true"
            " FROM unnest($1::bigint[], $2::integer[]) AS u(id, tokens) WHERE c.id = u.id",
            [u[0] for u in updates],
            [u[1] for u in updates],
        )
