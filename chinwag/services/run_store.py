"""A run's writes when the database misbehaves: brief bounded retries, and the ends that could not be written.

A run must end even when PostgreSQL is away: its sockets get `assistant_end`, and what it produced waits here
(`PendingEnds`, in this process's memory) until the database takes it. The chat service's heartbeat loop retries
them every beat; a new message on the session retries them at once, so the run slot held by a dead run's row
never refuses it once the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg

from chinwag.db import messages as messages_db
from chinwag.db import runs as runs_db
from chinwag.schemas.messages import MessageStatus
from chinwag.schemas.sessions import TokenUsage
from chinwag.services.postgres_session import ItemCounter, PostgresSession
from chinwag.services.token_aware_session import INTERRUPTED_OUTPUT

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_DELAYS_S = (0.2, 0.5, 1.0)
"""Waits between the attempts of one write (about 2 s in all): a database restart or a failover takes longer, and
a run does not hold its sockets waiting for it; what is left goes to `PendingEnds`."""

_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,  # connection refused, reset, no socket file
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # the connection closed under the query
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now (starting up)
)


def is_transient(exc: BaseException) -> bool:
    """A failure that another attempt may not meet (the database away), unlike a refused statement."""
    return isinstance(exc, _TRANSIENT)


async def with_retries(op: Callable[[], Awaitable[T]], *, what: str, delays: tuple[float, ...] | None = None) -> T:
    """`op()`, tried again after each of `delays` (default `RETRY_DELAYS_S`) while it fails with a transient error;
    then its error."""
    for delay in (*(RETRY_DELAYS_S if delays is None else delays), None):
        try:
            return await op()
        except Exception as exc:
            if delay is None or not is_transient(exc):
                raise
            logger.warning("%s failed (retrying in %.1f s): %s", what, delay, exc)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class UnrecordedEnd:
    """The end of a run that the database did not take: written later by `PendingEnds.flush`."""

    run_id: str
    session_id: str
    assistant_message_id: str | None
    content: str
    status: MessageStatus
    usage: TokenUsage
    run_status: runs_db.RunStatus
    finish_reason: str


class PendingEnds:
    """Ends of this process's runs waiting for the database (one per run; the newest wins)."""

    def __init__(self) -> None:
        self._ends: dict[str, UnrecordedEnd] = {}

    def add(self, end: UnrecordedEnd) -> None:
        logger.warning("run %s: its end is kept until the database takes it", end.run_id)
        self._ends[end.run_id] = end

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._ends

    def __len__(self) -> int:
        return len(self._ends)

    async def flush(self, pool: asyncpg.Pool, *, counter: ItemCounter) -> int:
        """Write what the database will take now; returns how many ends are still waiting. Stops at the first
        transient failure (the database is still away); an end the database refuses outright is written as far as
        it can be (the message's status at least), then dropped, so nothing stays `streaming`."""
        for end in list(self._ends.values()):
            try:
                await _write(pool, end, counter=counter)
            except Exception as exc:
                if is_transient(exc):
                    break
                logger.exception("run %s: its end could not be written in full", end.run_id)
                try:
                    await _write(pool, end, counter=counter, content=False)
                except Exception as again:
                    if is_transient(again):
                        break
                    logger.exception("run %s: its end is dropped", end.run_id)
            self._ends.pop(end.run_id, None)
            logger.info("run %s: its end is recorded", end.run_id)
        return len(self._ends)


async def _write(pool: asyncpg.Pool, end: UnrecordedEnd, *, counter: ItemCounter, content: bool = True) -> None:
    # One transaction: a reader never sees the answer ended while its run still holds the session's slot.
    async with pool.acquire() as conn, conn.transaction():
        if end.assistant_message_id is not None:
            if content:
                await messages_db.update_message(
                    conn,
                    message_id=end.assistant_message_id,
                    content=end.content,
                    status=end.status,
                    usage=end.usage,
                    finish_reason=end.finish_reason,
                )
            else:
                await messages_db.set_status(conn, message_id=uuid.UUID(end.assistant_message_id), status=end.status)
        await messages_db.end_streaming(conn, run_id=uuid.UUID(end.run_id), status=end.status)
        await runs_db.finish(
            conn,
            run_id=end.run_id,
            session_id=end.session_id,
            status=end.run_status,
            finish_reason=end.finish_reason,
            assistant_message_id=end.assistant_message_id,
        )
    # The model's context may hold a tool call whose output never came: close it (unless the session is gone).
    with contextlib.suppress(LookupError):
        await PostgresSession(pool, end.session_id, counter=counter).repair(output=INTERRUPTED_OUTPUT)
