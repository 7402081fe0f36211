"""Layer 1 follows the branch: with a tiny window, a summary made on one branch is used on another only when that
branch holds every turn it covers; items of turns off the active branch never reach the model."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import pytest

from chinwag.db import branches as branches_db
from chinwag.db.messages import append_message
from chinwag.db.pool import open_pool
from chinwag.services.context_items import is_summary_item
from chinwag.services.token_aware_session import TokenAwareSession
from tests.services.layer1_support import WordCounter, assistant, make_session, user, words
from tests.services.test_token_aware_session import RecordingSummarizer, as_items

COUNTER = WordCounter()


@pytest.fixture
async def pool(database_dsn: str, db: asyncpg.Connection) -> AsyncIterator[asyncpg.Pool]:
    async with open_pool(database_dsn, size=2, run_migrations=False) as p:
        yield p


@pytest.fixture
async def session_id(db: asyncpg.Connection) -> str:
    return (await make_session(db))[1]


def layer1(pool: asyncpg.Pool, session_id: str, summarizer: RecordingSummarizer, *, turn: int) -> TokenAwareSession:
    return TokenAwareSession.open(
        pool, session_id, counter=COUNTER, context_window=100, reserve_tokens=10, summarize=summarizer, turn_seq=turn
    )


async def add_turn(pool: asyncpg.Pool, session_id: str, summarizer: RecordingSummarizer, name: str) -> None:
    """A turn as a run makes it: the user message and its answer in Layer 2 (under the leaf), 24 tokens in Layer 1."""
    question = await append_message(pool, session_id=session_id, role="user", content=name)
    await add_answer(pool, session_id, summarizer, turn=question.seq, name=name)


async def add_answer(
    pool: asyncpg.Pool, session_id: str, summarizer: RecordingSummarizer, *, turn: int, name: str, ask: bool = True
) -> None:
    answer = await append_message(pool, session_id=session_id, role="assistant", content=name)
    tas = layer1(pool, session_id, summarizer, turn=turn)
    tas.store.answer_seq = answer.seq
    items = [user(words(10, f"q{name}"))] if ask else []
    await tas.add_items(as_items(*items, assistant(words(10, f"a{name}"))))


async def switch_to(pool: asyncpg.Pool, session_id: str, leaf: int | None) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await branches_db.lock_session(conn, session_id=uuid.UUID(session_id))
        await branches_db.set_leaf(conn, session_id=uuid.UUID(session_id), leaf=leaf)


def texts(items: list[Any]) -> list[str]:
    out = []
    for item in items:
        content = cast(dict[str, Any], item)["content"]
        out.append(content if isinstance(content, str) else content[0]["text"])
    return [t.split()[0] for t in out]


async def summarized_branch_a(pool: asyncpg.Pool, session_id: str, summarizer: RecordingSummarizer) -> None:
    """Turns 1, 3, 5, 7 (user seqs), 96 tokens: past 80% of the window, so the next view summarizes 1-5."""
    for name in ("1", "2", "3", "4"):
        await add_turn(pool, session_id, summarizer, name)
    view = await layer1(pool, session_id, summarizer, turn=9).prepare()
    assert view.summarized_now
    assert view.summarized_through_seq == 6
    assert texts(view.items[1:]) == ["q4", "a4"]


async def test_a_summary_of_branch_a_is_not_used_on_branch_b_forked_before_its_end(
    pool: asyncpg.Pool, session_id: str, db: asyncpg.Connection
) -> None:
    summarizer = RecordingSummarizer()
    await summarized_branch_a(pool, session_id, summarizer)

    # An edit of the second question (seq 3): branch B is turn 1, then the new question.
    await switch_to(pool, session_id, 2)
    await add_turn(pool, session_id, summarizer, "B")
    assert await db.fetchval("SELECT summary FROM sessions WHERE id = $1", session_id) is None
    requests = len(summarizer.requests)
    view = await layer1(pool, session_id, summarizer, turn=11).prepare()
    assert not any(is_summary_item(i) for i in view.items)
    assert texts(view.items) == ["q1", "a1", "qB", "aB"]  # nothing of turns 3, 5, 7
    assert len(summarizer.requests) == requests  # under the threshold: no summary needed

    # Branch B grows past the threshold: its own turns are summarized, never A's.
    for name in ("5", "6"):
        await add_turn(pool, session_id, summarizer, name)
    view = await layer1(pool, session_id, summarizer, turn=15).prepare()
    assert view.summarized_now
    condensed = [texts([i])[0] for request in summarizer.requests[requests:] for i in request if not is_summary_item(i)]
    assert condensed == ["q1", "a1", "qB", "aB", "q5", "a5"]
    assert texts(view.items[1:]) == ["q6", "a6"]

    # Back on A (the first version of seq 3): B's summary covers turns A lacks, so it goes too.
    await switch_to(pool, session_id, 8)
    assert await db.fetchval("SELECT summary FROM sessions WHERE id = $1", session_id) is None
    view = await layer1(pool, session_id, summarizer, turn=17).view()
    assert not any(is_summary_item(i) for i in view.items)
    # A's 96 tokens are over the budget (90): read only, the oldest turn is trimmed (a run would summarize it).
    assert (view.dropped_turns, texts(view.items)) == (1, ["q2", "a2", "q3", "a3", "q4", "a4"])


async def test_a_fork_after_the_summary_keeps_it_and_regenerated_answers_replace_the_old_one(
    pool: asyncpg.Pool, session_id: str, db: asyncpg.Connection
) -> None:
    summarizer = RecordingSummarizer()
    await summarized_branch_a(pool, session_id, summarizer)
    # Regenerate the answer to the last question (seq 7): the fork is after the summary's end (6).
    await switch_to(pool, session_id, 7)
    await add_answer(pool, session_id, summarizer, turn=7, name="4bis", ask=False)
    summary = await db.fetchval("SELECT summary FROM sessions WHERE id = $1", session_id)
    assert summary is not None
    view = await layer1(pool, session_id, summarizer, turn=11).view()
    assert is_summary_item(view.items[0])
    assert summary in view.items[0]["content"]
    assert texts(view.items[1:]) == ["q4", "a4bis"]  # the question once, the old answer (seq 8) gone

    # Previous version: seq 8 again, and only it.
    await switch_to(pool, session_id, 8)
    view = await layer1(pool, session_id, summarizer, turn=11).view()
    assert texts(view.items[1:]) == ["q4", "a4"]
