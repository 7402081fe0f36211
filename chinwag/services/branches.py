"""Branches of a conversation: switch the active one (`POST /sessions/{id}/branch`), and claim the run slot for an
`edit` or a `regenerate` together with the branch change it makes.

Everything happens under the session's run slot: a switch while a run is running (on any worker: the runs table
says) is `Busy`, and an edit or regenerate takes the slot in the same transaction as its branch change, so a refused
one changes nothing. Each switch is one transaction (see `db.branches`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import asyncpg

from chinwag.db import branches as branches_db
from chinwag.db import context as context_db
from chinwag.db import messages as messages_db
from chinwag.db import runs as runs_db
from chinwag.db import sessions as sessions_db
from chinwag.errors import BadRequest, Busy, NotFound
from chinwag.schemas.messages import Message
from chinwag.schemas.sessions import Session
from chinwag.services.message_utils import parse_id
from chinwag.services.postgres_session import ItemCounter
from chinwag.services.token_aware_session import session_context
from chinwag.websocket.bus import Bus, Envelope
from chinwag.websocket.events import SessionUpdated, encode

logger = logging.getLogger(__name__)

BUSY = "A run is active in this session: interrupt it first."


@dataclass(frozen=True, slots=True)
class BranchStart:
    """A run that changes the branch first: `regenerate` answers user message `seq` again (None: the last one on
    the active branch); `edit` puts a new user message beside `seq`."""

    kind: Literal["regenerate", "edit"]
    seq: int | None


@dataclass(frozen=True, slots=True)
class Claimed:
    """The run slot taken: the run, its user message, and whether Layer 1 holds that message already (a
    regenerated answer's question: the run sends no new input then)."""

    run: runs_db.RunRecord
    message: Message
    answer: Message
    """The run's assistant message: empty and `streaming` until the run ends it."""
    input_stored: bool
    session_versions: tuple[str, str] | None = None
    """The session row's versions before and after the claim (`runs.Started`); None after a branch change."""


async def switch_branch(
    pool: asyncpg.Pool,
    bus: Bus,
    *,
    user_id: str,
    session_id: str,
    seq: int,
    window: Callable[[str], int],
    counter_for: Callable[[str], ItemCounter],
) -> Session:
    """Make the branch through message `seq` active, down to its newest leaf; tell every socket of the session.
    `NotFound` for a session not the user's or a seq not in it; `Busy` during a run."""
    sid, uid = parse_id(session_id), parse_id(user_id, what="user")
    async with pool.acquire() as conn, conn.transaction():
        locked = await branches_db.lock_session(conn, session_id=sid, user_id=uid)
        if locked is None:
            raise NotFound("session not found")
        if locked.running:
            raise Busy(BUSY)
        leaf = await branches_db.newest_leaf_below(conn, session_id=sid, seq=seq)
        if leaf is None:
            raise NotFound(f"message {seq} not found in this session")
        if leaf != locked.leaf_seq:
            await branches_db.set_leaf(conn, session_id=sid, leaf=leaf)
    # The context's size shown with the session is that of the new branch (read only: no summary is made here).
    view = await session_context(
        pool, user_id=str(uid), session_id=str(sid), context_window=window, counter_for=counter_for
    )
    await context_db.set_context_tokens(pool, session_id=str(sid), tokens=view.tokens)
    session = await sessions_db.get_session(pool, user_id=uid, session_id=sid, window=window)
    if session is None:
        raise NotFound("session not found")
    await bus.publish(Envelope(session_id=session.id, frame=encode(SessionUpdated(session=session))))
    return session


async def claim(
    pool: asyncpg.Pool,
    start: BranchStart,
    *,
    session_id: uuid.UUID,
    client_id: str | None,
    owner: str | None,
    content: str = "",
) -> Claimed:
    """Take the run slot, change the branch for `start` and append the run's assistant message, in one
    transaction. Raises what
    `runs.start_with_message` raises (`RunSlotTaken`, `DuplicateClientId`, `LookupError`), and `BadRequest` when
    the seq is not a user message on the active branch; nothing is written then."""
    run_id, message_id = uuid.uuid4(), uuid.uuid4()
    try:
        async with pool.acquire() as conn, conn.transaction():
            locked = await branches_db.lock_session(conn, session_id=session_id)
            if locked is None:
                raise LookupError(f"session {session_id} does not exist")
            if client_id is not None and await runs_db.find_by_client_id(
                conn, session_id=session_id, client_id=client_id
            ):
                raise runs_db.DuplicateClientId(None)
            if locked.running:
                raise runs_db.RunSlotTaken()
            seq = start.seq
            if seq is None:
                seq = await branches_db.last_user_seq(conn, session_id=session_id)
                if seq is None:
                    raise BadRequest("there is no user message to answer again in this session")
            target = await branches_db.get_message(conn, session_id=session_id, seq=seq)
            if target is None or target.message.role != "user" or not target.on_branch:
                raise BadRequest(f"seq {seq} is not a user message on the active branch")
            if start.kind == "regenerate":
                await branches_db.insert_run(
                    conn,
                    run_id=run_id,
                    session_id=session_id,
                    client_id=client_id,
                    owner=owner,
                    user_message_id=uuid.UUID(target.message.id),
                )
                await branches_db.set_leaf(conn, session_id=session_id, leaf=seq)
                stored = await context_db.has_user_item(conn, session_id=str(session_id), turn_seq=seq)
                message = target.message
            else:
                await branches_db.insert_run(
                    conn,
                    run_id=run_id,
                    session_id=session_id,
                    client_id=client_id,
                    owner=owner,
                    user_message_id=message_id,
                )
                await branches_db.set_leaf(conn, session_id=session_id, leaf=target.parent)
                message = await branches_db.append_user_message(
                    conn,
                    message_id=message_id,
                    session_id=session_id,
                    run_id=run_id,
                    content=content,
                    client_id=client_id,
                )
                stored = False
            answer = await messages_db.append_message(
                conn, session_id=session_id, role="assistant", content="", status="streaming", run_id=run_id
            )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "runs_client_id_idx":
            raise runs_db.DuplicateClientId(None) from None
        raise runs_db.RunSlotTaken() from None
    record = runs_db.RunRecord(
        id=str(run_id), session_id=str(session_id), status="running", client_id=client_id, user_message_id=message.id
    )
    return Claimed(run=record, message=message, answer=answer, input_stored=stored)
