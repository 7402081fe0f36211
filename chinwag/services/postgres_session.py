"""Layer 1 storage: the Agents SDK `Session` protocol on PostgreSQL table `llm_context`.

Each SDK input item is stored as JSON with its token count and the turn it belongs to (`turn_seq`, the seq of the
user message that opened the turn). Connections are held only for the statement at hand.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol, cast

import asyncpg
from agents import SessionSettings, TResponseInputItem

from chinwag.db import context as db
from chinwag.services.context_items import (
    Item,
    call_id_of_call,
    call_id_of_output,
    can_close,
    canonical,
    is_user_message,
    plain_item,
    replayable,
    synthetic_output,
    to_json_item,
    without_id,
)

logger = logging.getLogger(__name__)


class ItemCounter(Protocol):
    """What Layer 1 needs of a token counter (`chinwag.llm.tokens.TokenCounter` satisfies it)."""

    def count_text(self, text: str) -> int: ...

    def count_item(self, item: Any) -> int: ...


class PostgresSession:
    """The SDK `Session` protocol on PostgreSQL (`llm_context`), one instance per run or request.

    `turn_seq` is the Layer 2 seq of the user message that opens the current turn; every item added through this
    object is stored with it. Left `None`, turns are numbered here: each user message opens turn `last + 1`.
    Turn numbers must not decrease along a session.
    """

    session_settings: SessionSettings | None = None

    def __init__(
        self,
        pool: asyncpg.Pool,
        session_id: str,
        *,
        counter: ItemCounter,
        turn_seq: int | None = None,
    ) -> None:
        self.session_id = session_id
        self.pool = pool
        self.counter = counter
        self.turn_seq = turn_seq
        self.answer_seq: int | None = None
        """The Layer 2 seq of the run's assistant message: what the run adds besides the user's input belongs to it
        (so that a regenerated answer replaces this one in the view of its branch)."""
        self.added_ids: list[int] = []
        """Ids of the rows this object added, in order (the current run's items)."""

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """Every stored item, oldest first; with `limit`, the newest `limit` of them."""
        rows = await self.rows(limit=limit)
        return [cast(TResponseInputItem, row.item) for row in rows]

    async def rows(self, *, limit: int | None = None, after_turn_seq: int | None = None) -> list[db.ContextRow]:
        """Stored rows, oldest first: the newest `limit`, or those of turns after `after_turn_seq`, or all."""
        async with self.pool.acquire() as conn:
            if limit is not None:
                return await db.tail_items(conn, session_id=self.session_id, limit=max(limit, 0))
            return await db.list_items(conn, session_id=self.session_id, after_turn_seq=after_turn_seq)

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append items, each with its offline token count and its turn."""
        await self.add_json_items([to_json_item(item) for item in items])

    async def add_json_items(self, items: Iterable[Item], *, turn_seq: int | None = None) -> list[int]:
        """Append already JSON-able items; `turn_seq` overrides this object's turn for them. Returns the row ids."""
        batch = list(items)
        if not batch:
            return []
        counted = [(item, self.counter.count_item(item)) for item in batch]
        explicit = turn_seq if turn_seq is not None else self.turn_seq
        if explicit is not None:
            # The turn is known (a run's items): lock and insert in one statement, one round trip.
            async with self.pool.acquire() as conn:
                added = await db.append_items(
                    conn,
                    session_id=self.session_id,
                    rows=[
                        (item, tokens, explicit, explicit if is_user_message(item) else self.answer_seq)
                        for item, tokens in counted
                    ],
                )
            if added is None:
                raise LookupError(f"session {self.session_id} does not exist")
            self.added_ids.extend(added)
            return added
        async with self.pool.acquire() as conn, conn.transaction():
            last = await db.lock_session_turn(conn, session_id=self.session_id)
            rows: list[db.Row] = []
            current = last if last is not None else 0
            for item, tokens in counted:
                if is_user_message(item):
                    current += 1
                rows.append((item, tokens, current, None))
            ids = await db.insert_items(conn, session_id=self.session_id, rows=rows)
        self.added_ids.extend(ids)
        return ids

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the newest item."""
        async with self.pool.acquire() as conn:
            row = await db.pop_last(conn, session_id=self.session_id)
        if row is None:
            return None
        if row.id in self.added_ids:
            self.added_ids.remove(row.id)
        return cast(TResponseInputItem, row.item)

    async def clear_session(self) -> None:
        """Forget every item and the summary."""
        async with self.pool.acquire() as conn:
            await db.clear(conn, session_id=self.session_id)
        self.added_ids.clear()

    async def state(self) -> db.ContextState:
        """The session's summary columns; `LookupError` if the session is gone."""
        async with self.pool.acquire() as conn:
            state = await db.get_state(conn, session_id=self.session_id)
        if state is None:
            raise LookupError(f"session {self.session_id} does not exist")
        return state

    async def unsummarized(self) -> tuple[db.ContextState, list[db.ContextRow]]:
        """The summary columns and the rows that summary does not cover (one statement, so they always match)."""
        async with self.pool.acquire() as conn:
            found = await db.unsummarized(conn, session_id=self.session_id)
        if found is None:
            raise LookupError(f"session {self.session_id} does not exist")
        return found

    async def repair(self, *, output: str = "interrupted") -> list[str]:
        """Guarantee that no tool call lacks its output: each dangling call gets a synthetic output (text `output`)
        right after its block of calls. Returns the call ids that were closed."""
        async with self.pool.acquire() as conn, conn.transaction():
            await db.lock_session_turn(conn, session_id=self.session_id)
            rows = await db.list_items(conn, session_id=self.session_id)
            answered = {cid for r in rows if (cid := call_id_of_output(r.item)) is not None}
            dangling = [i for i, r in enumerate(rows) if (cid := call_id_of_call(r.item)) and cid not in answered]
            if not dangling:
                return []
            start = dangling[0]
            new_rows: list[db.Row] = []
            origin: list[int | None] = []  # the old id of each new row (None: synthetic)
            pending: list[db.ContextRow] = []
            closed: list[str] = []
            for index in range(start, len(rows)):
                row = rows[index]
                call_id = call_id_of_call(row.item)
                if call_id is not None and call_id not in answered:
                    if not can_close(row.item):
                        closed.append(call_id)  # no output shape we can fake: the call itself goes
                        continue
                    pending.append(row)
                new_rows.append((row.item, row.tokens, row.turn_seq, row.message_seq))
                origin.append(row.id)
                next_is_call = index + 1 < len(rows) and call_id_of_call(rows[index + 1].item) is not None
                if pending and not next_is_call:
                    for call in pending:
                        item = synthetic_output(call.item, output)
                        new_rows.append((item, self.counter.count_item(item), call.turn_seq, call.message_seq))
                        origin.append(None)
                        closed.append(str(call.item["call_id"]))
                    pending = []
            ids = await db.replace_from(conn, session_id=self.session_id, from_id=rows[start].id, rows=new_rows)
        replaced = {r.id for r in rows[start:]}
        mine = set(self.added_ids)
        self.added_ids = [i for i in self.added_ids if i not in replaced]
        self.added_ids.extend(new for new, old in zip(ids, origin, strict=True) if old is None or old in mine)
        logger.info("session %s: closed %d dangling tool calls", self.session_id, len(closed))
        return closed

    async def flatten(self) -> None:
        """Rewrite every stored item as a plain text message (`plain_item`), in place: same turns, recounted."""
        async with self.pool.acquire() as conn, conn.transaction():
            await db.lock_session_turn(conn, session_id=self.session_id)
            rows = await db.list_items(conn, session_id=self.session_id)
            if not rows:
                return
            new_rows: list[db.Row] = []
            origin: list[int] = []
            for row in rows:
                item = plain_item(row.item)
                if item is not None:
                    new_rows.append((item, self.counter.count_item(item), row.turn_seq, row.message_seq))
                    origin.append(row.id)
            ids = await db.replace_from(conn, session_id=self.session_id, from_id=rows[0].id, rows=new_rows)
        mine = set(self.added_ids)
        self.added_ids = [new for new, old in zip(ids, origin, strict=True) if old in mine]
        logger.warning("session %s: history rewritten as %d plain messages", self.session_id, len(new_rows))

    async def run_rows(self) -> list[db.ContextRow]:
        """The rows this object added (the current run's items), oldest first."""
        if not self.added_ids:
            return []
        mine = set(self.added_ids)
        rows = await self.rows(limit=len(self.added_ids))
        return [r for r in rows if r.id in mine]

    async def add_partial_turn(self, items: Iterable[Any], *, output: str = "interrupted") -> list[str]:
        """Write what an interrupted run produced (the SDK drops its unfinished turn on `cancel("immediate")`):
        items already stored in this run are skipped, then `repair()` closes the calls left without output.
        Returns the call ids that were closed."""
        stored = await self.run_rows()
        seen_calls = {(r.item.get("type"), r.item.get("call_id")) for r in stored if r.item.get("call_id")}
        seen_items = [canonical(without_id(r.item)) for r in stored]
        fresh: list[Item] = []
        for raw in items:
            item = replayable(to_json_item(raw))
            if item.get("call_id") is not None:
                key = (item.get("type"), item.get("call_id"))
                if key in seen_calls:
                    continue
                seen_calls.add(key)
            elif canonical(without_id(item)) in seen_items:
                continue
            fresh.append(item)
        await self.add_json_items(fresh)
        return await self.repair(output=output)
