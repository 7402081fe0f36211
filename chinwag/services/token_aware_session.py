"""Layer 1: the token-managed view of a session that the model sees.

`TokenAwareSession` is what the chat service hands to `Runner.run_streamed(session=...)`. Before a run
(`get_items()`), it fits the stored items to the model's window minus a reserve: whole turns only (a turn starts at a
user message; a tool call always travels with its output). Once the history passes `summarize_at` of the window, the
oldest turns are condensed by the model into one summary item, persisted in `sessions.summary` (covering turns up to
`sessions.summarized_through_seq`) so it is not recomputed each turn. `sessions.context_tokens` records the size of
the view sent.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import asyncpg
from agents import SessionSettings, TResponseInputItem

from chinwag.db import context as db
from chinwag.errors import NotFound
from chinwag.llm.history import History, HistoryCache, history_item
from chinwag.services.context_items import (
    INTERRUPTED_OUTPUT,
    SUMMARY_INSTRUCTIONS,
    SUMMARY_PREFIX,
    Item,
    Turn,
    call_id_of_call,
    canonical,
    group_turns,
    paired_items,
    render_transcript,
    summary_item,
    summary_prompt,
)
from chinwag.services.images import REFERENCE_PREFIX
from chinwag.services.postgres_session import ItemCounter, PostgresSession

__all__ = [
    "INTERRUPTED_OUTPUT",
    "SUMMARY_INSTRUCTIONS",
    "SUMMARY_PREFIX",
    "ContextView",
    "Summarize",
    "TokenAwareSession",
    "default_reserve",
    "session_context",
    "summary_prompt",
]

logger = logging.getLogger(__name__)

SUMMARY_MAX_TOKENS = 512
"""The most tokens a summary's answer may take (asked for ~300 words)."""
SUMMARY_INPUT_SHARE = 0.9
"""Of what the window leaves for the conversation, the share a summary request uses: offline counts run a little
under a provider's (its chat template adds tokens per message)."""


class ImageForms(Protocol):
    """How a run's images travel (`services.images.ImageParts`): by reference in storage, as bytes to the model."""

    def by_reference(self, items: list[Any]) -> list[Any]: ...

    async def resolve(self, items: list[Any]) -> list[Any]: ...


Summarize = Callable[[list[TResponseInputItem]], Awaitable[str]]
"""Condense items (an earlier summary first, if any) into a short text; the chat service wraps the model."""


async def session_context(
    pool: asyncpg.Pool,
    *,
    user_id: str,
    session_id: str,
    context_window: Callable[[str], int],
    counter_for: Callable[[str], ItemCounter],
) -> ContextView:
    """What the model would see if the user's session took its next turn now (read only: no summary is made here).
    `NotFound` for a session that does not exist or is another user's."""
    try:
        session_id = str(uuid.UUID(session_id))
        user_id = str(uuid.UUID(user_id))
    except ValueError:
        raise NotFound("Session not found.") from None
    state = await db.get_state(pool, session_id=session_id, user_id=user_id)
    if state is None:
        raise NotFound("Session not found.")
    store = PostgresSession(pool, session_id, counter=counter_for(state.model))
    return await TokenAwareSession(store, context_window=context_window(state.model)).view()


def default_reserve(context_window: int) -> int:
    """Tokens kept free for the answer, the instructions, the tools and the new message by default."""
    return min(8192, context_window // 4)


@dataclass
class ContextView:
    """What the model sees next turn, and what was kept, dropped and summarized to get there."""

    sources: list[Item | db.ContextRow]
    """What the model gets, in order: each a stored row sent as stored (its item read only when needed), or an
    item made for this view (the summary, a cut turn, an item whose images were loaded)."""
    tokens: int
    limit: int
    budget: int
    summary: str | None
    summarized_through_seq: int | None
    summary_tokens: int
    row_ids: list[int]
    kept_turns: int
    dropped_turns: int
    dropped_through_seq: int | None
    summarized_now: bool = False

    @property
    def items(self) -> list[Item]:
        """What the model gets, as items (each stored row's item decoded, in the typed shape)."""
        return [self.items_at(i) for i in range(len(self.sources))]

    def items_at(self, index: int) -> Item:
        source = self.sources[index]
        return source if isinstance(source, dict) else canonical(source.item)

    @property
    def item_rows(self) -> list[int | None]:
        """The Layer 1 row each of `items` is, unchanged (None: the summary, a cut turn, an item whose images were
        loaded)."""
        return [None if isinstance(source, dict) else source.id for source in self.sources]


class TokenAwareSession:
    """The SDK `Session` given to a run: stores through `PostgresSession`, reads a fitted, summarized view.

    - `get_items()` (no limit) is the view fitted to `context_window - reserve_tokens`, summarizing first when the
      history passes `summarize_at * context_window` and a `summarize` callable is given.
    - `get_items(limit)` is the raw tail of stored items, as the SDK expects when it checks or rewinds its writes.
    - `reserve_tokens` is kept free for the answer and the new user message; `overhead_tokens` is
      what the model gets besides the history: instructions, file context, tool schemas.
    - A chat run builds it with `for_run` (its mode fixed at construction, nothing flipped later).
    """

    session_settings: SessionSettings | None = None

    def __init__(
        self,
        store: PostgresSession,
        *,
        context_window: int,
        reserve_tokens: int | None = None,
        summarize: Summarize | None = None,
        summarize_at: float = 0.8,
        keep_after_summary: float = 0.5,
        summarize_timeout_s: float | None = 60.0,
        overhead_tokens: int = 0,
        summary_overhead_tokens: int = 0,
        history: tuple[db.ContextState, list[db.ContextRow]] | None = None,
        record_context_tokens: bool = True,
        defer_first_write: bool = False,
        images: ImageForms | None = None,
        history_cache: HistoryCache | None = None,
    ) -> None:
        if context_window <= 0:
            raise ValueError("context_window must be positive")
        if not 0 < summarize_at <= 1 or not 0 <= keep_after_summary <= 1:
            raise ValueError("summarize_at must be in (0, 1] and keep_after_summary in [0, 1]")
        self.store = store
        self.session_id = store.session_id
        self.context_window = context_window
        self.reserve_tokens = default_reserve(context_window) if reserve_tokens is None else max(0, reserve_tokens)
        self.overhead_tokens = overhead_tokens
        """What the model gets besides the history: instructions, file context, tool schemas."""
        self.summarize = summarize
        self.summarize_at = summarize_at
        self.keep_after_summary = keep_after_summary
        self.summarize_timeout_s = summarize_timeout_s
        self.summary_overhead_tokens = summary_overhead_tokens
        """What a summary request carries besides the conversation (its instructions)."""
        self.last_view: ContextView | None = None
        """The view returned by the last `get_items()`: what the run's first model call received."""
        self.record_context_tokens = record_context_tokens
        """`prepare()` writes `sessions.context_tokens`; a chat run does not (it writes the size after the run, so
        the model request does not wait for that write)."""
        self._prefetched = history
        """The stored history, read already by the caller (`PostgresSession.unsummarized()`): the next `prepare()`
        uses it instead of reading again. Only for a caller that writes nothing to Layer 1 in between."""
        self._read: tuple[db.ContextState, list[db.ContextRow]] | None = None
        """The history `last_view` was fitted from, while nothing but this session's own appends changed it since
        (a summary, a pop, a clear, a repair or a rewrite forget it): `record_usage` works from it instead of
        reading and walking the whole history again."""
        self._turns: list[Turn] | None = None
        """`_read`'s rows grouped into turns (while `_read` holds): `record_usage` groups only the run's rows anew."""
        self.images = images
        """Images of the run: stored as references to their files, sent as data URLs."""
        self.defer_next_write = defer_first_write
        """The next `add_items` returns at once and writes in the background (a run's input item, which the SDK
        saves just before its first model request): every other method, and the next `add_items`, waits for that
        write first and raises its error."""
        self._writing: asyncio.Task[None] | None = None
        self.history_cache = history_cache
        """With a cache (the lean path), `get_items()` answers the view as one history item whose rows go to the
        model as JSON encoded once (`chinwag.llm.history`); without, the view's items."""

    @classmethod
    def open(
        cls,
        pool: asyncpg.Pool,
        session_id: str,
        *,
        counter: ItemCounter,
        context_window: int,
        turn_seq: int | None = None,
        reserve_tokens: int | None = None,
        summarize: Summarize | None = None,
    ) -> TokenAwareSession:
        """A session over a fresh `PostgresSession` (the usual way to build one per run)."""
        store = PostgresSession(pool, session_id, counter=counter, turn_seq=turn_seq)
        return cls(store, context_window=context_window, reserve_tokens=reserve_tokens, summarize=summarize)

    @classmethod
    def for_run(
        cls,
        store: PostgresSession,
        *,
        context_window: int,
        history: tuple[db.ContextState, list[db.ContextRow]],
        overhead_tokens: int,
        summarize: Summarize,
        summary_overhead_tokens: int,
        images: ImageForms | None = None,
        history_cache: HistoryCache | None = None,
    ) -> TokenAwareSession:
        """Layer 1 as a chat run uses it: the history read while the run set up, the run's overhead known, the
        context size left for the run to record after it ends, and the run's input item written in the background
        (the model request waits for neither write)."""
        return cls(
            store,
            context_window=context_window,
            summarize=summarize,
            overhead_tokens=overhead_tokens,
            summary_overhead_tokens=summary_overhead_tokens,
            history=history,
            record_context_tokens=False,
            defer_first_write=True,
            images=images,
            history_cache=history_cache,
        )

    @property
    def budget(self) -> int:
        """The most tokens the history may take."""
        return max(0, self.context_window - self.reserve_tokens - self.overhead_tokens)

    @property
    def threshold(self) -> int:
        """Past this many history tokens (with the overhead, `summarize_at` of the window), the oldest turns are
        summarized."""
        return max(0, min(int(self.context_window * self.summarize_at) - self.overhead_tokens, self.budget))

    # --- the SDK Session protocol

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The fitted view (summarizing if due); with `limit`, the raw newest `limit` stored items."""
        if limit is not None:
            await self.flush()
            return await self.store.get_items(limit)
        view = await self.prepare()
        if self.history_cache is not None:
            history = History(sources=view.sources, cache=self.history_cache, canonical=canonical)
            return [cast(TResponseInputItem, history_item(history))]
        return [cast(TResponseInputItem, item) for item in view.items]

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        await self.flush()
        if self.images is not None:
            items = self.images.by_reference(items)
        if self.defer_next_write:
            self.defer_next_write = False
            self._writing = asyncio.create_task(self.store.add_items(items), name=f"layer1-write-{self.session_id}")
            return
        await self.store.add_items(items)

    async def pop_item(self) -> TResponseInputItem | None:
        await self.flush()
        self._read = None
        return await self.store.pop_item()

    async def clear_session(self) -> None:
        await self.flush()
        self._read = None
        await self.store.clear_session()

    async def flush(self) -> None:
        """Wait for a deferred `add_items` write (see `defer_next_write`); raises its error, once."""
        writing, self._writing = self._writing, None
        if writing is not None:
            # Shielded: a caller cancelled while it waits must not cut the write in half.
            await asyncio.shield(writing)

    # --- chinwag's own API

    def history_bound(self) -> int:
        """At most how many tokens of history the next view holds: the size of the history read already (summary
        included) when it was given, never more than the budget."""
        if self._prefetched is None:
            return self.budget
        state, rows = self._prefetched
        return min(self.budget, self._summary_tokens(state.summary) + sum(r.tokens for r in rows))

    async def flatten(self) -> None:
        """Rewrite the stored history as plain text messages (for a provider that refused it; see
        `PostgresSession.flatten`)."""
        await self.flush()
        self._read = None
        await self.store.flatten()

    async def prepare(self) -> ContextView:
        """Summarize if due, fit, record `sessions.context_tokens` (unless `record_context_tokens` is off), and
        return the view the next model call gets."""
        fetched, self._prefetched = self._prefetched, None
        view = await self.view(summarize=self.summarize is not None, fetched=fetched)
        if self.record_context_tokens:
            async with self.store.pool.acquire() as conn:
                await db.set_context_tokens(conn, session_id=self.session_id, tokens=view.tokens)
        if self.images is not None:
            # Only items that may hold an image reference are read for it: a row's JSON names the reference.
            at = [i for i, source in enumerate(view.sources) if _may_reference(source)]
            stored = [view.items_at(i) for i in at]
            loaded = await self.images.resolve(stored)
            for i, new, old in zip(at, loaded, stored, strict=True):
                if new is not old:
                    view.sources[i] = new
        self.last_view = view
        return view

    async def view(
        self,
        *,
        summarize: bool = False,
        fetched: tuple[db.ContextState, list[db.ContextRow]] | None = None,
        grouped: list[Turn] | None = None,
    ) -> ContextView:
        """The fitted view; summarizing (with the model) only when `summarize` is true and the history is past the
        threshold. Without it this only reads, and is what `GET /sessions/{id}/context` shows. `fetched` is what
        `PostgresSession.unsummarized()` returned, when the caller has read it already; `grouped`, its rows as
        `group_turns` groups them, when known."""
        await self.flush()
        state, rows = fetched if fetched is not None else await self.store.unsummarized()
        self._read = (state, rows)
        turns = grouped if grouped is not None else group_turns(rows)
        self._turns = turns
        summary, through = state.summary, state.summarized_through_seq
        summary_tokens = self._summary_tokens(summary)
        summarized_now = False

        history = summary_tokens + sum(t.tokens for t in turns)
        if summarize and self.summarize is not None and history > self.threshold and len(turns) > 1:
            done = await self._summarize_oldest(
                turns, summary=summary, through=through, failed_through=state.summary_failed_through_seq
            )
            if done is not None:
                summary, through, turns = done
                summary_tokens = self._summary_tokens(summary)
                summarized_now = True
                self._read = None

        if summary_tokens > self.budget:
            logger.warning(
                "session %s: summary of %d tokens exceeds the budget; not sent", self.session_id, summary_tokens
            )
            summary_tokens = 0
            sent_summary = None
        else:
            sent_summary = summary

        # Each turn's size summed once (a running total, not a sum over the kept turns per dropped one).
        sizes = [t.tokens for t in turns]
        kept_tokens = sum(sizes)
        first = 0
        while first < len(turns) and summary_tokens + kept_tokens > self.budget:
            kept_tokens -= sizes[first]
            first += 1
        kept, dropped = turns[first:], turns[:first]
        if dropped:
            logger.info(
                "session %s: %d oldest turns (%d tokens) dropped to fit %d tokens",
                self.session_id,
                len(dropped),
                sum(t.tokens for t in dropped),
                self.budget,
            )

        kept_rows = [row for turn in kept for row in turn.rows]
        sent_rows = paired_items(kept_rows)
        sent_tokens = kept_tokens if len(sent_rows) == len(kept_rows) else sum(r.tokens for r in sent_rows)
        sources: list[Item | db.ContextRow] = [summary_item(sent_summary)] if sent_summary is not None else []
        sources.extend(sent_rows)
        cut_tokens = 0
        if not kept and dropped:
            # Even the newest turn alone is over the budget (a huge answer): the model gets it cut to fit rather
            # than no memory of it at all. Its rows stay whole in storage.
            newest = dropped.pop()
            cut = self._cut_to_fit([row.item for row in paired_items(newest.rows)], self.budget - summary_tokens)
            sources.extend(cut)
            cut_tokens = sum(self.store.counter.count_item(item) for item in cut)
        return ContextView(
            sources=sources,
            tokens=summary_tokens + sent_tokens + cut_tokens,
            limit=self.context_window,
            budget=self.budget,
            summary=summary,
            summarized_through_seq=through,
            summary_tokens=summary_tokens,
            row_ids=[r.id for r in sent_rows],
            kept_turns=len(kept),
            dropped_turns=len(dropped),
            dropped_through_seq=dropped[-1].seq if dropped else None,
            summarized_now=summarized_now,
        )

    async def repair(self) -> list[str]:
        """Close every tool call left without output (synthetic output "interrupted"); returns their call ids."""
        await self.flush()
        self._read = None
        return await self.store.repair(output=INTERRUPTED_OUTPUT)

    async def add_partial_turn(self, items: Iterable[Any]) -> list[str]:
        """After an interrupt: store what the run produced that the SDK did not, then `repair()`."""
        await self.flush()
        self._read = None
        return await self.store.add_partial_turn(items, output=INTERRUPTED_OUTPUT)

    async def record_usage(
        self, *, input_tokens: int, output_tokens: int, overhead_tokens: int | None = None
    ) -> ContextView:
        """Make token counts exact with the usage the provider reported for the run's LAST model call.

        `output_tokens` (without hidden reasoning tokens) becomes the count of the items that call produced.
        `input_tokens` calibrates the items that call received whose counts are still offline estimates: the rows
        marked exact (calibrated by an earlier run) are taken as they are, and the rest, with `overhead_tokens` (the
        offline count of what the call got besides the history: instructions, tools; default
        `self.overhead_tokens`, counted with the same counter), are scaled by
        `(input_tokens - exact) / (overhead + offline rest)`. So each row is calibrated once, not by every run:
        a run writes the counts of its own rows only, however long the history. That needs `get_items()` to have
        been called on this object (the run read its history through it). Returns the view the next turn will see
        (and records its size in `sessions.context_tokens`), fitted from the history already in memory when
        nothing but this run's appends changed it.
        """
        await self.flush()
        run_rows = await self.store.run_rows()
        produced = _last_response(run_rows)
        before = run_rows[: len(run_rows) - len(produced)]
        updates: dict[int, int] = {}
        if produced and output_tokens > 0:
            updates.update(_spread(produced, output_tokens))

        read = self._read
        start = self.last_view  # None: this object never gave the SDK its history, so what it sent is unknown
        if start is not None and input_tokens > 0:
            start_ids = set(start.row_ids)
            run_ids = {r.id for r in run_rows}
            if read is not None:
                history = read[1]
            else:
                history = await self.store.rows(after_turn_seq=start.summarized_through_seq)
            sent = [r for r in history if r.id in start_ids and r.id not in run_ids] + before
            overhead = self.overhead_tokens if overhead_tokens is None else overhead_tokens
            exact = sum(r.tokens for r in sent if r.exact)
            offline = [r for r in sent if not r.exact]
            estimate = overhead + start.summary_tokens + sum(r.tokens for r in offline)
        else:
            offline, exact, estimate = [], 0, 0
        if offline and estimate > 0:
            ratio = (input_tokens - exact) / estimate
            if 0.2 <= ratio <= 5:
                updates.update({r.id: max(1, round(r.tokens * ratio)) for r in offline})
            else:
                logger.warning(
                    "session %s: usage %d vs offline %d (+%d exact); not calibrated",
                    self.session_id,
                    input_tokens,
                    estimate,
                    exact,
                )
        if updates:
            async with self.store.pool.acquire() as conn:
                await db.set_item_tokens(conn, updates=sorted(updates.items()))
        if read is not None and self._read is read:
            history = read[1]
            new = [r.with_tokens(updates[r.id]) if r.id in updates else r for r in _after(history, run_rows)]
            turns = _extended(self._turns, new, updates) if self._turns is not None else None
            view = await self.view(fetched=(read[0], _merged(history, new, updates)), grouped=turns)
        else:
            view = await self.view()
        async with self.store.pool.acquire() as conn:
            await db.set_context_tokens(conn, session_id=self.session_id, tokens=view.tokens)
        return view

    def _summary_tokens(self, summary: str | None) -> int:
        return self.store.counter.count_item(summary_item(summary)) if summary is not None else 0

    @property
    def summary_input_tokens(self) -> int:
        """The most tokens of conversation one summary request carries: the window less the summary's answer
        (`SUMMARY_MAX_TOKENS`, at most a quarter of the window) and `summary_overhead_tokens` (its instructions),
        with a margin for the difference between offline and provider counts."""
        answer = min(SUMMARY_MAX_TOKENS, self.context_window // 4)
        room = self.context_window - answer - self.summary_overhead_tokens
        return max(1, int(room * SUMMARY_INPUT_SHARE))

    async def _summarize_oldest(
        self, turns: list[Turn], *, summary: str | None, through: int | None, failed_through: int | None = None
    ) -> tuple[str, int, list[Turn]] | None:
        """Condense the oldest turns (never the newest) until the rest is within `keep_after_summary` of the
        threshold; persist the new summary. None when nothing could be summarized."""
        target = int(self.threshold * self.keep_after_summary)
        remaining = sum(t.tokens for t in turns)
        count = 0
        while count < len(turns) - 1 and remaining > target:
            remaining -= turns[count].tokens
            count += 1
        old = turns[:count]
        new_through = max((t.seq for t in old if t.seq is not None), default=None)
        if not old or new_through is None:
            return None
        first_kept = turns[count].seq
        if first_kept is not None and first_kept - 1 > new_through:
            # Turns are numbered by their user message's seq: the summary covers every message before the next one.
            new_through = first_kept - 1

        if failed_through is not None and new_through <= failed_through:
            # The model failed on this very input before: trim instead until the history has moved on.
            return None

        # Summarize in chunks that fit the summary request by construction, folding the previous summary into each
        # next request; a turn larger than a whole request is cut (`_fit_transcript`).
        text = summary
        chunk: list[Turn] = []
        limit = self.summary_input_tokens
        try:
            # The run waits for this before its first token: a slow or dead model must not hold it for long.
            async with asyncio.timeout(self.summarize_timeout_s):
                for turn in old:
                    chunk_tokens = sum(t.tokens for t in chunk) + self._summary_tokens(text)
                    if chunk and chunk_tokens + turn.tokens > limit:
                        text = await self._summarize_chunk(text, chunk)
                        chunk = []
                    chunk.append(turn)
                text = await self._summarize_chunk(text, chunk)
        except Exception as exc:
            logger.warning(
                "session %s: summarizing through seq %s failed (%s); trimming instead, and not asking again until"
                " the history moves",
                self.session_id,
                new_through,
                exc,
            )
            async with self.store.pool.acquire() as conn:
                await db.set_summary_failed(conn, session_id=self.session_id, through_seq=new_through)
            return None
        if not text:
            return None

        async with self.store.pool.acquire() as conn:
            saved = await db.save_summary(
                conn, session_id=self.session_id, summary=text, through_seq=new_through, expected_through_seq=through
            )
        if not saved:
            logger.info("session %s: summary written concurrently; using the stored one", self.session_id)
            return None
        logger.info(
            "session %s: %d turns (%d tokens) summarized through seq %s into %d tokens",
            self.session_id,
            len(old),
            sum(t.tokens for t in old),
            new_through,
            self._summary_tokens(text),
        )
        return text, new_through, turns[count:]

    async def _summarize_chunk(self, summary: str | None, chunk: list[Turn]) -> str:
        assert self.summarize is not None
        items: list[Item] = [summary_item(summary)] if summary is not None else []
        items.extend(row.item for turn in chunk for row in turn.rows)
        items = self._fit_transcript(items)
        text = await self.summarize([cast(TResponseInputItem, i) for i in items])
        return text.strip()

    def _cut_to_fit(self, items: list[Item], limit: int) -> list[Item]:
        """The items as plain messages with their texts cut (start and end kept) until they count `limit` at most;
        nothing when even the shortest cut does not fit."""
        counter = self.store.counter
        total = sum(counter.count_item(item) for item in items)
        share = limit / max(total, 1) * 0.95
        for _ in range(8):
            cut = [_shortened(item, share) for item in items]
            if sum(counter.count_item(item) for item in cut) <= limit:
                logger.info(
                    "session %s: the newest turn is over the budget; sent cut to %d tokens", self.session_id, limit
                )
                return cut
            share *= 0.7
        return []

    def _fit_transcript(self, items: list[Item]) -> list[Item]:
        """Items whose transcript fits one summary request: when it is too long (one huge turn), the texts are cut
        to their share of the limit, keeping each one's start and end."""
        limit = self.summary_input_tokens
        counter = self.store.counter
        total = counter.count_text(summary_prompt(items))
        if total <= limit:
            return items
        share = limit / max(total, 1) * 0.95
        fitted = items
        for _ in range(8):  # cut from the originals, harder each round, until the counter agrees it fits
            fitted = [_shortened(item, share) for item in items]
            if counter.count_text(summary_prompt(fitted)) <= limit:
                break
            share *= 0.7
        logger.info("session %s: a summary request's transcript was cut to fit %d tokens", self.session_id, limit)
        return fitted


def _shortened(item: Item, share: float) -> Item:
    """The item as a plain message with its text cut to `share` of its length (start and end kept)."""
    role = item.get("role") if isinstance(item.get("role"), str) else "assistant"
    text = render_transcript([item]).removeprefix(f"{role}: ")
    keep = max(1, int(len(text) * share))
    if keep < len(text):
        head = keep * 2 // 3
        text = f"{text[:head]}\n[... {len(text) - keep} characters left out ...]\n{text[len(text) - (keep - head) :]}"
    return {"type": "message", "role": role, "content": text}


def _after(history: list[db.ContextRow], run_rows: list[db.ContextRow]) -> list[db.ContextRow]:
    """The run's rows that are not in the history read before it (rows are in id order)."""
    last = history[-1].id if history else None
    return [r for r in run_rows if last is None or r.id > last]


def _merged(history: list[db.ContextRow], new: list[db.ContextRow], updates: dict[int, int]) -> list[db.ContextRow]:
    """The history as stored now: the rows read before the run with the counts just written, and the run's own."""
    if not any(r.id in updates for r in history):
        return history + new
    return [r.with_tokens(updates[r.id]) if r.id in updates else r for r in history] + new


def _extended(turns: list[Turn], new: list[db.ContextRow], updates: dict[int, int]) -> list[Turn] | None:
    """`group_turns` of the history with `new` rows appended, from the history's turns: only the last turn and the
    new rows are grouped again (counts in `updates` applied). None when a new row answers a call of an earlier
    turn (grouping would merge across turns: the caller groups everything)."""
    if not turns:
        return group_turns(new)
    head = turns[:-1]
    answered = {r.output_id for r in new if r.output_id is not None}
    if answered and any(r.call_id in answered for turn in head for r in turn.rows):
        return None
    tail = [r.with_tokens(updates[r.id]) if r.id in updates else r for r in turns[-1].rows]
    if any(r.id in updates for turn in head for r in turn.rows):
        head = [Turn(rows=[r.with_tokens(updates[r.id]) if r.id in updates else r for r in t.rows]) for t in head]
    return head + group_turns(tail + new)


def _may_reference(source: Item | db.ContextRow) -> bool:
    """Whether an item of the view may hold an image reference (`chinwag-file:<id>`); a stored row not decoded yet
    is known not to when its JSON text does not name one."""
    if isinstance(source, dict):
        return True
    raw = source.raw
    return raw is None or REFERENCE_PREFIX in raw


def _is_model_output(item: Item) -> bool:
    return item.get("role") == "assistant" or item.get("type") == "reasoning" or call_id_of_call(item) is not None


def _last_response(rows: list[db.ContextRow]) -> list[db.ContextRow]:
    """The trailing rows that the last model call produced (its messages, reasoning and tool calls)."""
    count = 0
    for row in reversed(rows):
        if not _is_model_output(row.item):
            break
        count += 1
    return rows[len(rows) - count :]


def _spread(rows: list[db.ContextRow], total: int) -> dict[int, int]:
    """Share `total` tokens among rows in proportion to their offline counts (the sum is exactly `total`)."""
    offline = sum(max(r.tokens, 1) for r in rows)
    shares: dict[int, int] = {}
    given = 0
    for row in rows[:-1]:
        share = max(1, total * max(row.tokens, 1) // offline)
        shares[row.id] = share
        given += share
    shares[rows[-1].id] = max(1, total - given)
    return shares
