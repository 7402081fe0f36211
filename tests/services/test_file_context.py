"""The file context of a run, on a real PostgreSQL: instructions within the budget, tools bound to one session."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import asyncpg
import pytest
from agents import FunctionTool
from agents.tool_context import ToolContext

from chinwag.db import files as files_db
from chinwag.errors import BadRequest
from chinwag.services.file_context import READ_MAX_CHARS, build_file_context, check_file_ids


class WordCounter:
    """A real, simple counter: one token per whitespace-separated word."""

    def count_text(self, text: str) -> int:
        return len(text.split())


@pytest.fixture
async def pool(db: asyncpg.Connection, database_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_dsn, min_size=1, max_size=2) as p:
        yield p


async def new_session(db: asyncpg.Connection) -> str:
    user_id = await db.fetchval(
        "INSERT INTO users (email, password_hash, display_name) VALUES ($1, 'x', 'T') RETURNING id",
        f"{uuid.uuid4().hex}@example.com",
    )
    session_id = await db.fetchval("INSERT INTO sessions (user_id, model) VALUES ($1, 'm') RETURNING id", user_id)
    return str(session_id)


_clock = datetime(2026, 1, 1).astimezone()


async def add_file(
    db: asyncpg.Connection,
    session_id: str,
    name: str,
    text: str | None,
    *,
    error: str | None = None,
    content_type: str = "text/plain",
) -> str:
    global _clock
    _clock += timedelta(seconds=1)
    file_id = uuid.uuid4()
    stored = await files_db.insert_file(
        db,
        file_id=file_id,
        session_id=uuid.UUID(session_id),
        name=name,
        size=len((text or "").encode()),
        content_type=content_type,
        sha256=hashlib.sha256((text or "").encode()).hexdigest(),
        tokens=WordCounter().count_text(text or ""),
        text=text,
        extract_error=error,
        storage_key=f"{session_id}/{file_id}",
    )
    assert stored is not None
    # Distinct creation times so "newest first" is well defined.
    await db.execute("UPDATE files SET created_at = $2 WHERE id = $1", file_id, _clock)
    return str(file_id)


def tool(tools: list[FunctionTool], name: str) -> FunctionTool:
    return next(t for t in tools if t.name == name)


async def call(t: FunctionTool, **arguments: object) -> str:
    args = json.dumps(arguments)
    ctx = ToolContext(context=None, tool_name=t.name, tool_call_id="call_1", tool_arguments=args)
    result = await t.on_invoke_tool(ctx, args)
    assert isinstance(result, str)
    return result


async def test_no_files_no_context(db: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    session_id = await new_session(db)
    context = await build_file_context(pool=pool, session_id=session_id, budget_tokens=1000, counter=WordCounter())
    assert context.instructions == ""
    assert context.tools == []
    assert context.tokens == 0


async def test_small_files_whole_within_budget_named_first(db: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    session_id = await new_session(db)
    a = await add_file(db, session_id, "a.txt", "alpha-marker " * 100)  # 100 tokens
    b = await add_file(db, session_id, "b.txt", "bravo-marker " * 100)
    c = await add_file(db, session_id, "c.txt", "charlie-marker " * 100)
    counter = WordCounter()

    # Room for about two files: c and b are newest, so they win without a named file.
    context = await build_file_context(pool=pool, session_id=session_id, budget_tokens=400, counter=counter)
    assert context.included_ids == [c, b]
    assert "charlie-marker" in context.instructions
    assert "bravo-marker" in context.instructions
    assert "alpha-marker" not in context.instructions
    assert "a.txt" in context.instructions  # still listed
    assert "read_file" in context.instructions
    assert context.tokens == counter.count_text(context.instructions)
    assert context.tokens <= 400
    assert {t.name for t in context.tools} == {"list_files", "read_file", "search_files"}

    # The message names a: it goes in first.
    context = await build_file_context(
        pool=pool, session_id=session_id, file_ids=[a], budget_tokens=400, counter=counter
    )
    assert context.included_ids == [a, c]
    assert "alpha-marker" in context.instructions
    assert "bravo-marker" not in context.instructions

    # A budget that holds every file: all whole, no hint to read the rest.
    context = await build_file_context(pool=pool, session_id=session_id, budget_tokens=10_000, counter=counter)
    assert sorted(context.included_ids) == sorted([a, b, c])
    assert "not shown above in full" not in context.instructions

    # A budget too small for any text: only the listing.
    context = await build_file_context(pool=pool, session_id=session_id, budget_tokens=50, counter=counter)
    assert context.included_ids == []
    assert "b.txt" in context.instructions
    assert "bravo-marker" not in context.instructions


async def test_a_big_file_is_skipped_for_smaller_ones(db: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    session_id = await new_session(db)
    small = await add_file(db, session_id, "small.md", "small-marker " * 10)
    await add_file(db, session_id, "big.txt", "big-marker " * 5000)
    context = await build_file_context(pool=pool, session_id=session_id, budget_tokens=1000, counter=WordCounter())
    assert context.included_ids == [small]
    assert "big-marker" not in context.instructions
    assert "big.txt" in context.instructions
    assert "5000 tokens" in context.instructions


async def test_unreadable_files_are_named_with_the_reason(db: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    session_id = await new_session(db)
    await add_file(
        db, session_id, "scan.pdf", None, error="this PDF file has no text layer", content_type="application/pdf"
    )
    context = await build_file_context(pool=pool, session_id=session_id, budget_tokens=1000, counter=WordCounter())
    assert "scan.pdf" in context.instructions
    assert "this PDF file has no text layer" in context.instructions
    assert context.included_ids == []
    read = await call(tool(context.tools, "read_file"), name="scan.pdf", offset=0, length=100)
    assert "could not be read" in read
    assert "no text layer" in read


async def test_read_file_ranges(db: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    session_id = await new_session(db)
    text = "".join(f"{i:05d}" for i in range(10_000))  # 50,000 characters, each position recognizable
    file_id = await add_file(db, session_id, "numbers.txt", text)
    context = await build_file_context(pool=pool, session_id=session_id, budget_tokens=10, counter=WordCounter())
    read_file = tool(context.tools, "read_file")

    first = await call(read_file, name="numbers.txt", offset=0, length=25)
    header, body = first.split("\n", 1)
    assert body == text[:25]
    assert "characters 0-25 of 50000" in header
    assert "offset=25" in header

    middle = await call(read_file, name="numbers.txt", offset=12_345, length=100)
    assert middle.split("\n", 1)[1] == text[12_345:12_445]

    # By id as well as by name; and the length is capped.
    capped = await call(read_file, name=file_id, offset=0, length=10**9)
    assert capped.split("\n", 1)[1] == text[:READ_MAX_CHARS]

    last = await call(read_file, name="NUMBERS.TXT", offset=49_990, length=100)
    header, body = last.split("\n", 1)
    assert body == text[49_990:]
    assert "end of the file" in header

    assert "past its end" in await call(read_file, name="numbers.txt", offset=50_000, length=10)
    assert "offset must be" in await call(read_file, name="numbers.txt", offset=-1, length=10)
    assert "No file named" in await call(read_file, name="../../etc/passwd", offset=0, length=10)


async def test_read_file_handles_multibyte_text(db: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    session_id = await new_session(db)
    text = "żółć😀" * 10
    await add_file(db, session_id, "pl.txt", text)
    context = await build_file_context(pool=pool, session_id=session_id, budget_tokens=0, counter=WordCounter())
    out = await call(tool(context.tools, "read_file"), name="pl.txt", offset=3, length=4)
    assert out.split("\n", 1)[1] == text[3:7]


async def test_list_and_search_files(db: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    session_id = await new_session(db)
    await add_file(db, session_id, "recipe.md", "Mix the flour with water. The secret ingredient is cardamom.")
    await add_file(db, session_id, "notes.txt", "Meeting notes: budget approved for project zephyr_v2.")
    context = await build_file_context(pool=pool, session_id=session_id, budget_tokens=0, counter=WordCounter())

    listed = await call(tool(context.tools, "list_files"))
    assert "recipe.md" in listed
    assert "notes.txt" in listed

    search = tool(context.tools, "search_files")
    found = await call(search, query="cardamom")
    assert "recipe.md" in found
    assert "cardamom" in found
    assert "notes.txt" not in found
    # Not a whole word for full-text search: the substring fallback finds it.
    found = await call(search, query="zephyr_v")
    assert "notes.txt" in found
    assert "zephyr_v2" in found
    assert "No file text matches" in await call(search, query="pineapple")
    # No word at all for full-text search: the substring search still answers.
    assert "No file text matches" in await call(search, query="!!! ???")
    assert "notes.txt" in await call(search, query=": budget")
    assert await call(search, query="  ") == "The query is empty."


async def test_tools_never_cross_sessions(db: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    mine = await new_session(db)
    theirs = await new_session(db)
    await add_file(db, mine, "mine.txt", "my-own-words")
    their_id = await add_file(db, theirs, "theirs.txt", "their-secret-marker")

    context = await build_file_context(pool=pool, session_id=mine, budget_tokens=10_000, counter=WordCounter())
    assert "their-secret-marker" not in context.instructions
    assert "theirs.txt" not in context.instructions
    assert "theirs.txt" not in await call(tool(context.tools, "list_files"))
    assert "No file named" in await call(tool(context.tools, "read_file"), name="theirs.txt", offset=0, length=50)
    assert "No file named" in await call(tool(context.tools, "read_file"), name=their_id, offset=0, length=50)
    assert "No file text matches" in await call(tool(context.tools, "search_files"), query="their-secret-marker")
    # Naming another session's file in a message adds nothing either.
    context = await build_file_context(
        pool=pool, session_id=mine, file_ids=[their_id], budget_tokens=10_000, counter=WordCounter()
    )
    assert "their-secret-marker" not in context.instructions


async def test_check_file_ids(db: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    mine = await new_session(db)
    theirs = await new_session(db)
    a = await add_file(db, mine, "a.txt", "a")
    b = await add_file(db, mine, "b.txt", "b")
    other = await add_file(db, theirs, "c.txt", "c")

    await check_file_ids(pool, mine, [])
    await check_file_ids(pool, mine, [a, b, a])
    for bad in ([a, other], ["not-a-uuid"], [str(uuid.uuid4())]):
        with pytest.raises(BadRequest) as info:
            await check_file_ids(pool, mine, bad)
        assert bad[-1] in info.value.detail


async def test_large_text_of_distinct_words_is_stored_and_searchable(
    db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    # ~2.6 MB of distinct tokens: its full tsvector would pass PostgreSQL's 1 MiB limit.
    session_id = await new_session(db)
    words = [uuid.uuid4().hex[:12] for _ in range(200_000)]
    text = " ".join(words)
    await add_file(db, session_id, "hashes.log", text)
    context = await build_file_context(pool=pool, session_id=session_id, budget_tokens=0, counter=WordCounter())
    assert f"{len(text)} characters" in context.instructions
    search = tool(context.tools, "search_files")
    assert "hashes.log" in await call(search, query=words[10])  # full-text, in the indexed start
    assert "hashes.log" in await call(search, query=words[-1])  # substring fallback, past the index
    read = await call(tool(context.tools, "read_file"), name="hashes.log", offset=len(text) - 12, length=100)
    assert read.split("\n", 1)[1] == words[-1]
