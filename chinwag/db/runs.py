"""SQL of the `runs` table, and of `sessions.active_run_id` which mirrors the running run.

The run slot of a session is the partial unique index `runs_one_running_idx`: inserting a second 'running' row for
a session fails, in every worker alike. `runs_client_id_idx` makes a client's message id idempotent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from chinwag.db.messages import RETURNING_NEW, storable_text
from chinwag.db.sessions import Executor
from chinwag.schemas.messages import Message

Conn = asyncpg.Connection | PoolConnectionProxy
"""A single connection (transactions need one)."""

RunStatus = Literal["running", "complete", "interrupted", "error", "max_turns"]


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: str
    session_id: str
    status: RunStatus
    client_id: str | None
    user_message_id: str | None


@dataclass(frozen=True, slots=True)
class Started:
    """What `start_with_message` wrote, and the session row's versions before and after it."""

    run: RunRecord
    user: Message
    answer: Message
    session_versions: tuple[str, str]


class RunSlotTaken(Exception):
    """Another run of the session is running."""


class DuplicateClientId(Exception):
    """A run with this client id exists in the session already."""

    def __init__(self, run: RunRecord | None) -> None:
        super().__init__(run.id if run is not None else "")
        self.run = run


def _record(row: asyncpg.Record) -> RunRecord:
    return RunRecord(
        id=str(row["id"]),
        session_id=str(row["session_id"]),
        status=row["status"],
        client_id=row["client_id"],
        user_message_id=None if row["user_message_id"] is None else str(row["user_message_id"]),
    )


async def find_by_client_id(db: Executor, *, session_id: uuid.UUID, client_id: str) -> RunRecord | None:
    row = await db.fetchrow(
        "SELECT id, session_id, status, client_id, user_message_id FROM runs WHERE session_id = $1 AND client_id = $2",
        session_id,
        client_id,
    )
    return None if row is None else _record(row)


async def count_running_for_user(db: Executor, user_id: uuid.UUID) -> int:
    """How many runs of this user's sessions are running now, on any worker."""
    count: int = await db.fetchval(
        "SELECT count(*) FROM runs r JOIN sessions s ON s.id = r.session_id"
        " WHERE s.user_id = $1 AND r.status = 'running'",
        user_id,
    )
    return count


async def start_with_message(
    db: Executor,
    *,
    session_id: uuid.UUID,
    client_id: str | None,
    owner: str | None,
    content: str,
) -> Started:
    """Take the session's run slot for the process `owner` (its heartbeat starts now), append the user message and
    the run's assistant message under it (empty, `streaming`; seqs from `sessions.message_count`, as
    `messages.append_message` allocates them) and show the run as the session's active one: ONE statement, one
    round trip, one commit, atomic without a transaction. Returns the run, the user message, the assistant message
    and the versions of the session row before and after it (its `xmin`: a Layer 1 read that saw either is current
    for the run, see `ContextState.version`). Raises `RunSlotTaken` (a run is active) or
    `DuplicateClientId` (the unique indexes of `runs`); then nothing is written."""
    run_id, message_id, answer_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    try:
        rows = await db.fetch(
            "WITH r AS ("
            " INSERT INTO runs (id, session_id, client_id, owner, heartbeat_at, user_message_id, assistant_message_id)"
            " VALUES ($1, $2, $3, $4, now(), $5, $8) RETURNING id),"
            " s AS ("
            " UPDATE sessions s SET message_count = s.message_count + 2, leaf_seq = s.message_count + 2,"
            " updated_at = now(), active_run_id = $1"
            " FROM (SELECT id, leaf_seq, xmin FROM sessions WHERE id = $2 FOR UPDATE) o WHERE s.id = o.id"
            " RETURNING s.message_count - 1 AS seq, coalesce(o.leaf_seq, 0) AS parent, o.xmin::text AS before,"
            " s.xmin::text AS after),"
            " u AS ("
            " INSERT INTO messages AS m (id, session_id, seq, parent_seq, role, content, status, run_id, client_id)"
            " SELECT $5, $2, s.seq, s.parent, 'user', $6, 'complete', r.id, $7 FROM s, r" + RETURNING_NEW + "),"
            " a AS ("
            " INSERT INTO messages AS m (id, session_id, seq, parent_seq, role, content, status, run_id)"
            " SELECT $8, $2, s.seq + 1, s.seq, 'assistant', '', 'streaming', r.id FROM s, r" + RETURNING_NEW + ")"
            " SELECT u.*, s.before AS version_before, s.after AS version_after FROM u, s"
            " UNION ALL SELECT a.*, s.before, s.after FROM a, s ORDER BY seq",
            run_id,
            session_id,
            client_id,
            owner,
            message_id,
            storable_text(content),
            None if client_id is None else storable_text(client_id),
            answer_id,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "runs_client_id_idx":
            raise DuplicateClientId(None) from None
        raise RunSlotTaken() from None
    except asyncpg.ForeignKeyViolationError:  # the runs insert names a session that is gone (deleted meanwhile)
        raise LookupError(f"session {session_id} does not exist") from None
    if len(rows) != 2:
        raise LookupError(f"session {session_id} does not exist")
    versions: tuple[str, str] = (rows[0]["version_before"], rows[0]["version_after"])
    user, answer = (Message.from_record(row) for row in rows)
    record = RunRecord(
        id=str(run_id), session_id=str(session_id), status="running", client_id=client_id, user_message_id=user.id
    )
    return Started(run=record, user=user, answer=answer, session_versions=versions)


async def finish(
    db: Executor,
    *,
    run_id: str,
    session_id: str,
    status: RunStatus,
    finish_reason: str,
    assistant_message_id: str | None = None,
) -> None:
    """End the run and free the session's slot, in one statement."""
    await db.execute(
        "WITH r AS (UPDATE runs SET status = $2, finish_reason = $3, ended_at = now(),"
        " assistant_message_id = coalesce($5::uuid, assistant_message_id) WHERE id = $1 AND status = 'running')"
        " UPDATE sessions SET active_run_id = NULL WHERE id = $4 AND active_run_id = $1",
        uuid.UUID(run_id),
        status,
        finish_reason,
        uuid.UUID(session_id),
        None if assistant_message_id is None else uuid.UUID(assistant_message_id),
    )


async def status(db: Executor, *, run_id: str) -> RunStatus | None:
    value: RunStatus | None = await db.fetchval("SELECT status FROM runs WHERE id = $1", uuid.UUID(run_id))
    return value


async def active_run_id(db: Executor, *, session_id: str) -> str | None:
    value = await db.fetchval("SELECT active_run_id FROM sessions WHERE id = $1", uuid.UUID(session_id))
    return None if value is None else str(value)


async def heartbeat(db: Executor, *, owner: str, run_ids: list[str]) -> int:
    """The process `owner` is alive and still executes `run_ids`: stamp them (one statement); returns how many.
    Only runs with a live task are named, so a run whose end the database missed (it was away) goes stale and is
    ended by the sweep, even if this process never manages to write that end itself."""
    result = await db.execute(
        "UPDATE runs SET heartbeat_at = now() WHERE owner = $1 AND status = 'running' AND id = ANY($2::uuid[])",
        owner,
        [uuid.UUID(r) for r in run_ids],
    )
    return int(result.rsplit(" ", 1)[-1])


async def interrupt_abandoned(db: Conn) -> tuple[list[str], int]:
    """At start-up: runs left 'running' and messages left 'streaming' by a dead process become 'interrupted'.

    Returns the sessions of the runs ended, and the number of messages changed. Safe only while no other live
    process runs chats on this database (one process, no Redis); several use `end_dead_runs`.
    """
    async with db.transaction():
        runs = await db.fetch(
            "UPDATE runs SET status = 'interrupted', finish_reason = 'interrupted', ended_at = now()"
            " WHERE status = 'running' RETURNING session_id"
        )
        await db.execute("UPDATE sessions SET active_run_id = NULL WHERE active_run_id IS NOT NULL")
        messages = await db.fetch(
            "UPDATE messages SET status = 'interrupted', updated_at = now() WHERE status = 'streaming' RETURNING id"
        )
    return sorted({str(r["session_id"]) for r in runs}), len(messages)


@dataclass(frozen=True, slots=True)
class DeadRun:
    """A run ended because its process died: what its sockets are told of."""

    run_id: str
    session_id: str
    assistant_message_id: str | None
    model: str
    context_tokens: int


async def end_dead_runs(db: Conn, *, stale_s: float, owner: str | None = None) -> list[DeadRun]:
    """Runs whose process stopped heartbeating more than `stale_s` ago (dead, or cut off from the database), and
    with `owner` every running run of that owner whatever its heartbeat (this very process's previous life), become
    'interrupted', with their 'streaming' messages and their sessions' `active_run_id`. One transaction; concurrent
    sweeps of several processes each end a run at most once."""
    async with db.transaction():
        runs = await db.fetch(
            "UPDATE runs SET status = 'interrupted', finish_reason = 'interrupted', ended_at = now()"
            " WHERE status = 'running' AND (coalesce(heartbeat_at, started_at) < now() - make_interval(secs => $1)"
            " OR owner = $2)"
            " RETURNING id, session_id",
            stale_s,
            owner,
        )
        if not runs:
            return []
        run_ids = [r["id"] for r in runs]
        sessions = await db.fetch(
            "UPDATE sessions SET active_run_id = NULL WHERE active_run_id = ANY($1::uuid[])"
            " RETURNING id, model, context_tokens",
            run_ids,
        )
        messages = await db.fetch(
            "UPDATE messages SET status = 'interrupted', updated_at = now()"
            " WHERE status = 'streaming' AND run_id = ANY($1::uuid[]) RETURNING id, run_id, role",
            run_ids,
        )
        await db.execute(
            "UPDATE runs r SET assistant_message_id = m.id FROM messages m"
            " WHERE r.id = ANY($1::uuid[]) AND m.run_id = r.id AND m.role = 'assistant'"
            " AND r.assistant_message_id IS NULL",
            run_ids,
        )
    answers = {r["run_id"]: str(r["id"]) for r in messages if r["role"] == "assistant"}
    by_session = {r["id"]: r for r in sessions}
    return [
        DeadRun(
            run_id=str(r["id"]),
            session_id=str(r["session_id"]),
            assistant_message_id=answers.get(r["id"]),
            model=by_session[r["session_id"]]["model"] if r["session_id"] in by_session else "",
            context_tokens=by_session[r["session_id"]]["context_tokens"] if r["session_id"] in by_session else 0,
        )
        for r in runs
    ]


async def heartbeat_alive(db: Executor, *, owner: str, run_ids: list[str]) -> set[str]:
    """`heartbeat`, returning the runs stamped: a run of `run_ids` missing was ended meanwhile by another process
    (this one looked dead to it), so its task must stop without writing."""
    rows = await db.fetch(
        "UPDATE runs SET heartbeat_at = now() WHERE owner = $1 AND status = 'running' AND id = ANY($2::uuid[])"
        " RETURNING id",
        owner,
        [uuid.UUID(r) for r in run_ids],
    )
    return {str(r["id"]) for r in rows}
