"""The run slot on a real PostgreSQL: one statement claims it with the user message and the run's assistant message."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from chinwag.db import context as context_db
from chinwag.db import messages as messages_db
from chinwag.db import runs as runs_db
from chinwag.db import sessions as sessions_db


async def _session(pool: asyncpg.Pool) -> uuid.UUID:
    user_id = await pool.fetchval(
        "INSERT INTO users (email, password_hash, display_name) VALUES ('r@example.com', 'x', 'R') RETURNING id"
    )
    session = await sessions_db.insert_session(
        pool, user_id=user_id, title="t", model="m", instructions="", mcp_servers=None, window=lambda _: 1000
    )
    return uuid.UUID(session.id)


async def test_the_claim_writes_the_run_its_question_and_its_empty_answer(app_pool: asyncpg.Pool) -> None:
    session_id = await _session(app_pool)
    earlier = await messages_db.append_message(app_pool, session_id=session_id, role="user", content="before")
    started = await runs_db.start_with_message(
        app_pool, session_id=session_id, client_id="c1", owner="host-1", content="What time is it?"
    )
    run, user, answer = started.run, started.user, started.answer
    assert (user.seq, user.role, user.content, user.status) == (2, "user", "What time is it?", "complete")
    assert user.parent_seq == earlier.seq
    assert (answer.seq, answer.role, answer.content, answer.status) == (3, "assistant", "", "streaming")
    assert answer.parent_seq == user.seq
    assert answer.sibling_seqs == [3]
    assert answer.run_id == user.run_id == run.id
    session = await app_pool.fetchrow(
        "SELECT message_count, leaf_seq, active_run_id FROM sessions WHERE id = $1", session_id
    )
    assert session is not None
    assert (session["message_count"], session["leaf_seq"], str(session["active_run_id"])) == (3, 3, run.id)
    stored = await app_pool.fetchrow(
        "SELECT status, user_message_id, assistant_message_id FROM runs WHERE id = $1", uuid.UUID(run.id)
    )
    assert stored is not None
    assert stored["status"] == "running"
    assert (str(stored["user_message_id"]), str(stored["assistant_message_id"])) == (user.id, answer.id)


async def test_a_refused_claim_writes_nothing(app_pool: asyncpg.Pool) -> None:
    session_id = await _session(app_pool)
    run = (
        await runs_db.start_with_message(app_pool, session_id=session_id, client_id="c1", owner="h", content="one")
    ).run
    with pytest.raises(runs_db.RunSlotTaken):
        await runs_db.start_with_message(app_pool, session_id=session_id, client_id="c2", owner="h", content="two")
    await runs_db.finish(app_pool, run_id=run.id, session_id=str(session_id), status="complete", finish_reason="stop")
    with pytest.raises(runs_db.DuplicateClientId):
        await runs_db.start_with_message(app_pool, session_id=session_id, client_id="c1", owner="h", content="one")
    assert await app_pool.fetchval("SELECT count(*) FROM messages WHERE session_id = $1", session_id) == 2
    assert await app_pool.fetchval("SELECT message_count FROM sessions WHERE id = $1", session_id) == 2
    with pytest.raises(LookupError):
        await runs_db.start_with_message(app_pool, session_id=uuid.uuid4(), client_id=None, owner="h", content="x")


async def test_a_layer1_read_is_current_for_a_claim_over_the_same_session_version(app_pool: asyncpg.Pool) -> None:
    """The run's history may be read before its claim: it is the run's only if the claim took the slot over the
    session row's version that read saw. A run's end (the slot freed), a summary, a branch switch or any change of
    the session row in between makes the versions differ, and the run reads again."""
    session_id = await _session(app_pool)
    before = await context_db.unsummarized(app_pool, session_id=str(session_id))
    assert before is not None
    started = await runs_db.start_with_message(app_pool, session_id=session_id, client_id=None, owner="h", content="a")
    before_claim, made = started.session_versions
    assert before_claim == before[0].version  # nothing changed in between: the read is current

    stale = await context_db.unsummarized(app_pool, session_id=str(session_id))
    assert stale is not None
    assert stale[0].version == made  # a read just after the claim sees the version it made: current too
    # The run writes its items to Layer 1, then ends: its slot is freed by an update of the session row.
    await context_db.append_items(
        app_pool, session_id=str(session_id), rows=[({"role": "user", "content": "a"}, 1, 1, 1)]
    )
    await runs_db.finish(
        app_pool, run_id=started.run.id, session_id=str(session_id), status="complete", finish_reason="stop"
    )
    after = await runs_db.start_with_message(app_pool, session_id=session_id, client_id=None, owner="h", content="b")
    assert stale[0].version not in after.session_versions  # a read from before that end is not the run's
    fresh = await context_db.unsummarized(app_pool, session_id=str(session_id))
    assert fresh is not None
    assert [row.raw is not None or row.item is not None for row in fresh[1]] == [True]
