"""TokenAwareSession: fitting, summarizing and repairing the model's view, with tiny windows so it really happens."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import pytest
from agents import Agent, RunConfig, Runner, TResponseInputItem, function_tool
from agents.testing import ModelCall, ModelStep, ScriptedModel, assistant_message, function_call

from chinwag.db.context import ContextRow
from chinwag.db.pool import open_pool
from chinwag.services.context_items import (
    SUMMARY_PREFIX,
    call_id_of_call,
    call_id_of_output,
    group_turns,
    is_summary_item,
    is_user_message,
    render_transcript,
    summary_prompt,
)
from chinwag.services.postgres_session import PostgresSession
from chinwag.services.token_aware_session import TokenAwareSession
from tests.services.layer1_support import (
    WordCounter,
    assistant,
    call,
    make_session,
    new_input,
    output,
    user,
    words,
)

COUNTER = WordCounter()


@pytest.fixture
async def pool(database_dsn: str, db: asyncpg.Connection) -> AsyncIterator[asyncpg.Pool]:
    async with open_pool(database_dsn, size=2, run_migrations=False) as p:
        yield p


@pytest.fixture
async def session_id(db: asyncpg.Connection) -> str:
    return (await make_session(db))[1]


class RecordingSummarizer:
    """Stands in for the model: records what it was asked to condense and answers a short, countable text."""

    def __init__(self, *, fail: bool = False) -> None:
        self.requests: list[list[TResponseInputItem]] = []
        self.fail = fail

    async def __call__(self, items: list[TResponseInputItem]) -> str:
        self.requests.append(items)
        if self.fail:
            raise RuntimeError("model unavailable")
        users = sum(1 for i in items if is_user_message(cast(dict[str, Any], i)))
        earlier = [re.search(r"asked (\d+) things", str(i.get("content"))) for i in items if is_summary_item(i)]
        return f"the user asked {users + sum(int(m.group(1)) for m in earlier if m)} things"


def as_items(*values: dict[str, Any]) -> list[TResponseInputItem]:
    return [cast(TResponseInputItem, v) for v in values]


def check_pairs(items: list[Any]) -> None:
    """No tool call without its output, no output without its call."""
    calls = [cid for i in items if (cid := call_id_of_call(i))]
    outputs = [cid for i in items if (cid := call_id_of_output(i))]
    assert sorted(calls) == sorted(outputs)


async def add_small_turn(tas: TokenAwareSession, n: int) -> None:
    """A turn of 24 tokens: 10 words each way."""
    await tas.add_items(as_items(user(words(10, f"q{n}")), assistant(words(10, f"a{n}"))))


async def three_turns(tas: TokenAwareSession) -> list[list[dict[str, Any]]]:
    turns = [
        [user(words(10)), assistant(words(10))],  # 24 tokens
        [user("q"), call("c1"), output("c1", words(30)), assistant(words(5))],  # 3 + 5 + 33 + 7 = 48
        [user(words(10, "last")), assistant(words(10, "end"))],  # 24
    ]
    for turn in turns:
        await tas.add_items(as_items(*turn))
    return turns


async def test_everything_is_sent_while_it_fits(pool: asyncpg.Pool, session_id: str) -> None:
    tas = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=200, reserve_tokens=20)
    turns = await three_turns(tas)
    assert await tas.get_items() == [item for turn in turns for item in turn]
    assert tas.last_view is not None
    assert (tas.last_view.tokens, tas.last_view.limit, tas.last_view.dropped_turns) == (96, 200, 0)


async def test_trimming_keeps_whole_turns_and_tool_pairs_at_every_budget(pool: asyncpg.Pool, session_id: str) -> None:
    turns = await three_turns(TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=10))
    flat = [item for turn in turns for item in turn]
    boundaries = {0, 2, 6, 8}  # where whole turns start in `flat`
    for window in range(1, 120):
        tas = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=window, reserve_tokens=0)
        got = await tas.get_items()
        view = tas.last_view
        assert view is not None
        assert view.tokens <= window
        if view.kept_turns == 0:
            # Not even the newest turn fits whole: it is sent cut to fit (plain messages), or nothing at all.
            cut = [cast(dict[str, Any], i) for i in got]
            assert all(i.get("type") == "message" and "left out" in str(i.get("content")) for i in cut), got
            continue
        assert len(flat) - len(got) in boundaries, (window, got)
        assert got == flat[len(flat) - len(got) :]
        check_pairs(got)
        # The newest turns are kept first: nothing newer was dropped while older stayed.
        assert view.kept_turns == {8: 0, 6: 1, 2: 2, 0: 3}[len(flat) - len(got)]

    tas = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=80, reserve_tokens=0)
    got = await tas.get_items()
    assert got == flat[2:]
    assert tas.last_view is not None
    assert (tas.last_view.tokens, tas.last_view.dropped_turns) == (72, 1)


async def test_the_reserve_is_kept_free(pool: asyncpg.Pool, session_id: str) -> None:
    tas = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=100, reserve_tokens=30)
    turns = await three_turns(tas)
    assert await tas.get_items() == turns[2]  # 96 > 70; 72 > 70; 24 fits


async def test_the_overhead_of_instructions_and_tools_is_kept_free(pool: asyncpg.Pool, session_id: str) -> None:
    writer = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=100, reserve_tokens=0)
    turns = await three_turns(writer)
    tas = TokenAwareSession(writer.store, context_window=100, reserve_tokens=0, overhead_tokens=30)
    assert await tas.get_items() == turns[2]  # 96 > 70; 72 > 70; 24 fits
    assert tas.threshold == 50


async def test_context_tokens_recorded_for_the_session(
    pool: asyncpg.Pool, session_id: str, db: asyncpg.Connection
) -> None:
    tas = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=80, reserve_tokens=0)
    await three_turns(tas)
    await tas.get_items()
    assert await db.fetchval("SELECT context_tokens FROM sessions WHERE id = $1", session_id) == 72


def rows(*specs: tuple[dict[str, Any], int]) -> list[ContextRow]:
    return [ContextRow(id=i, item=item, tokens=1, turn_seq=seq) for i, (item, seq) in enumerate(specs)]


def test_a_tool_output_written_in_a_later_turn_stays_with_its_call() -> None:
    grouped = group_turns(
        rows(
            (user("a"), 1),
            (call("c1"), 1),
            (user("b"), 3),  # written out of order by an interrupted run
            (output("c1", "x"), 3),
            (assistant("y"), 3),
            (user("c"), 5),
            (assistant("z"), 5),
        )
    )
    assert [[r.id for r in t.rows] for t in grouped] == [[0, 1, 2, 3, 4], [5, 6]]
    assert [t.seq for t in grouped] == [3, 5]


def test_each_user_message_opens_a_turn() -> None:
    grouped = group_turns(rows((user("a"), 1), (user("b"), 1), (assistant("c"), 1), (assistant("d"), 2)))
    assert [[r.id for r in t.rows] for t in grouped] == [[0], [1, 2], [3]]


async def test_summary_is_made_past_80_percent_counted_persisted_and_reused(
    pool: asyncpg.Pool, session_id: str, db: asyncpg.Connection
) -> None:
    summarizer = RecordingSummarizer()

    def session() -> TokenAwareSession:
        return TokenAwareSession.open(
            pool, session_id, counter=COUNTER, context_window=100, reserve_tokens=10, summarize=summarizer
        )

    tas = session()
    for n in range(1, 4):  # 72 tokens: under 80% of 100
        await add_small_turn(tas, n)
    assert len(await tas.get_items()) == 6
    assert summarizer.requests == []

    await add_small_turn(tas, 4)  # 96 tokens: past 80
    got = await session().get_items()

    # Three turns (72 tokens) do not fit one summary request of a 100-token window (67, after the answer's 25): two
    # requests, the second folding in the first's summary.
    assert len(summarizer.requests) == 2
    condensed = [cast(dict[str, Any], i) for request in summarizer.requests for i in request]
    # The oldest turns go, until the rest is within half the threshold (40); the newest turn always stays.
    assert [i["content"] for i in condensed if is_user_message(i)] == [
        words(10, "q1"),
        words(10, "q2"),
        words(10, "q3"),
    ]
    assert is_summary_item(got[0])
    first = cast(dict[str, Any], got[0])
    assert first["role"] == "system"
    assert first["content"] == f"{SUMMARY_PREFIX}\n\nthe user asked 3 things"
    assert got[1:] == [user(words(10, "q4")), assistant(words(10, "a4"))]

    summary_tokens = COUNTER.count_item(first)
    state = await db.fetchrow(
        "SELECT summary, summarized_through_seq, context_tokens FROM sessions WHERE id = $1", session_id
    )
    assert state is not None
    assert dict(state) == {
        "summary": "the user asked 3 things",
        "summarized_through_seq": 3,
        "context_tokens": summary_tokens + 24,
    }

    # Reused, not recomputed, on the next turns while it fits.
    again = session()
    assert await again.get_items() == got
    assert again.last_view is not None
    assert again.last_view.summary_tokens == summary_tokens
    assert len(summarizer.requests) == 2

    # Later, the old summary is folded into the new one.
    for n in range(5, 7):
        await add_small_turn(again, n)
    got = await session().get_items()
    assert len(summarizer.requests) > 2
    assert is_summary_item(summarizer.requests[2][0])
    assert got[1:] == [user(words(10, "q6")), assistant(words(10, "a6"))]
    assert await db.fetchval("SELECT summarized_through_seq FROM sessions WHERE id = $1", session_id) == 5


async def test_the_view_endpoint_mode_never_calls_the_model(pool: asyncpg.Pool, session_id: str) -> None:
    summarizer = RecordingSummarizer()
    tas = TokenAwareSession.open(
        pool, session_id, counter=COUNTER, context_window=100, reserve_tokens=10, summarize=summarizer
    )
    for n in range(1, 6):
        await add_small_turn(tas, n)
    view = await tas.view()
    assert summarizer.requests == []
    assert view.tokens <= 90
    assert view.summary is None


async def test_a_failing_summarizer_falls_back_to_trimming(
    pool: asyncpg.Pool, session_id: str, db: asyncpg.Connection
) -> None:
    summarizer = RecordingSummarizer(fail=True)
    tas = TokenAwareSession.open(
        pool, session_id, counter=COUNTER, context_window=100, reserve_tokens=10, summarize=summarizer
    )
    for n in range(1, 6):
        await add_small_turn(tas, n)
    got = await tas.get_items()
    assert len(summarizer.requests) == 1
    assert got == [i for n in range(3, 6) for i in (user(words(10, f"q{n}")), assistant(words(10, f"a{n}")))]
    assert await db.fetchval("SELECT summary FROM sessions WHERE id = $1", session_id) is None


async def test_a_hanging_summarizer_is_given_up_on_time(pool: asyncpg.Pool, session_id: str) -> None:
    async def hang(items: list[TResponseInputItem]) -> str:
        await asyncio.Event().wait()
        return "never"

    filler = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=100)
    for n in range(1, 6):
        await add_small_turn(filler, n)
    tas = TokenAwareSession(
        filler.store, context_window=100, reserve_tokens=10, summarize=hang, summarize_timeout_s=0.2
    )
    async with asyncio.timeout(5):
        got = await tas.get_items()
    assert got[0] == user(words(10, "q3"))  # trimmed instead


async def test_summarizing_a_long_history_goes_in_chunks_that_fit(pool: asyncpg.Pool, session_id: str) -> None:
    summarizer = RecordingSummarizer()
    filler = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=100)
    for n in range(1, 21):  # 480 tokens in a 100-token window
        await add_small_turn(filler, n)
    tas = TokenAwareSession.open(
        pool, session_id, counter=COUNTER, context_window=100, reserve_tokens=10, summarize=summarizer
    )
    got = await tas.get_items()
    assert len(summarizer.requests) > 1
    for request in summarizer.requests:
        assert COUNTER.count_items(list(request)) <= 90
    for request in summarizer.requests[1:]:
        assert is_summary_item(request[0])
    assert is_summary_item(got[0])
    assert got[-2:] == [user(words(10, "q20")), assistant(words(10, "a20"))]


async def test_limit_reads_the_raw_tail(pool: asyncpg.Pool, session_id: str) -> None:
    tas = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=30, reserve_tokens=0)
    turns = await three_turns(tas)
    flat = [item for turn in turns for item in turn]
    assert await tas.get_items(limit=3) == flat[-3:]
    assert await tas.pop_item() == flat[-1]
    await tas.clear_session()
    assert await tas.get_items() == []


async def test_record_usage_makes_counts_exact(pool: asyncpg.Pool, session_id: str, db: asyncpg.Connection) -> None:
    tas = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=1000)
    await add_small_turn(tas, 1)  # 24 tokens of history before the run
    run = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=1000)
    await run.get_items()
    await run.add_items(as_items(user(words(4)), call("c1"), output("c1", words(8)), assistant(words(8))))
    # Offline, the last call got 10 (overhead) + 24 (history) + 6 + 5 + 11 = 56; the provider says 112.
    view = await run.record_usage(input_tokens=112, output_tokens=40, overhead_tokens=10)

    tokens = [r["tokens"] for r in await db.fetch("SELECT tokens FROM llm_context ORDER BY id")]
    assert tokens == [24, 24, 12, 10, 22, 40]
    assert view.tokens == sum(tokens)
    assert await db.fetchval("SELECT context_tokens FROM sessions WHERE id = $1", session_id) == sum(tokens)


async def test_each_row_is_calibrated_once_and_a_later_run_writes_only_its_own(
    pool: asyncpg.Pool, session_id: str, db: asyncpg.Connection
) -> None:
    """The counts of an old history are not rewritten by every run: a calibrated row keeps its count, and the next
    run scales only its own rows, by what the provider's usage leaves after the exact ones."""
    first = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=1000)
    await first.get_items()
    await first.add_items(as_items(user(words(4)), assistant(words(8))))  # offline 6 + 10
    await first.record_usage(input_tokens=20, output_tokens=12, overhead_tokens=4)  # (20 - 0) / (4 + 6) = 2
    assert [r["tokens"] for r in await db.fetch("SELECT tokens FROM llm_context ORDER BY id")] == [12, 12]
    written = await db.fetch("SELECT id, xmin::text AS version FROM llm_context ORDER BY id")

    second = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=1000)
    await second.get_items()
    await second.add_items(as_items(user(words(4)), assistant(words(8))))
    # Sent: overhead 4 (offline), the exact 24 of the first turn, the new user message 6 (offline).
    view = await second.record_usage(input_tokens=44, output_tokens=9, overhead_tokens=4)  # (44 - 24) / (4 + 6)
    rows = await db.fetch("SELECT id, tokens, tokens_exact, xmin::text AS version FROM llm_context ORDER BY id")
    assert [r["tokens"] for r in rows] == [12, 12, 12, 9]
    assert all(r["tokens_exact"] for r in rows)
    assert [(r["id"], r["version"]) for r in rows[:2]] == [(w["id"], w["version"]) for w in written]
    # The view fitted from memory is the one a fresh read gives.
    fresh = await TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=1000).view()
    assert (view.tokens, view.items, view.row_ids) == (fresh.tokens, fresh.items, fresh.row_ids)
    assert await db.fetchval("SELECT context_tokens FROM sessions WHERE id = $1", session_id) == 45


async def test_record_usage_without_a_read_only_fixes_the_answer(pool: asyncpg.Pool, session_id: str) -> None:
    tas = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=1000)
    await tas.add_items(as_items(user(words(4)), assistant(words(8))))
    view = await tas.record_usage(input_tokens=500, output_tokens=9, overhead_tokens=0)
    assert view.tokens == 6 + 9


def test_the_summary_prompt_reads_like_a_transcript() -> None:
    text = render_transcript(
        [user("hi"), call("c1", "weather", '{"city":"Oslo"}'), output("c1", "sunny"), assistant("ok")]
    )
    assert text == 'user: hi\n\ntool call weather({"city":"Oslo"})\n\ntool result: sunny\n\nassistant: ok'
    assert summary_prompt([user("hi")]).endswith("user: hi")


# --- the real SDK runner on top of it


@function_tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@function_tool
async def slow_lookup(query: str) -> str:
    """A tool that takes long."""
    await asyncio.sleep(30)
    return "never"


RUN_CONFIG = RunConfig(tracing_disabled=True)


async def test_the_sdk_runner_round_trips_our_items(pool: asyncpg.Pool, session_id: str) -> None:
    model = ScriptedModel(
        [
            [function_call("weather", {"city": "Oslo"}, call_id="call-1")],
            [assistant_message("It is sunny in Oslo.")],
            [assistant_message("You asked about Oslo.")],
        ]
    )
    agent = Agent(name="assistant", instructions="Be brief.", model=model, tools=[weather])

    def session() -> TokenAwareSession:
        return TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=1000)

    first = await Runner.run(agent, "Weather in Oslo?", session=session(), run_config=RUN_CONFIG)
    assert first.final_output == "It is sunny in Oslo."
    second = await Runner.run(agent, "What did I ask?", session=session(), run_config=RUN_CONFIG)
    assert second.final_output == "You asked about Oslo."

    sent = cast(list[dict[str, Any]], model.calls[-1].input)
    assert [i.get("type", "message") for i in sent] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
        "message",
    ]
    assert sent[2]["output"] == "sunny in Oslo"
    assert sent[-1] == new_input("What did I ask?")
    stored = await session().store.get_items()
    assert len(stored) == 6


async def test_the_sdk_accepts_the_summary_and_a_trimmed_history(
    pool: asyncpg.Pool, session_id: str, db: asyncpg.Connection
) -> None:
    summarizer = RecordingSummarizer()
    model = ScriptedModel()
    agent = Agent(name="assistant", model=model, tools=[weather])
    for n in range(1, 7):
        if n % 2:
            model.extend([[function_call("weather", {"city": f"c{n}"}, call_id=f"call-{n}")]])
        model.extend([[assistant_message(words(12, f"answer{n}"))]])
        tas = TokenAwareSession.open(
            pool,
            session_id,
            counter=COUNTER,
            context_window=120,
            reserve_tokens=20,
            summarize=summarizer,
            turn_seq=n * 10,
        )
        result = await Runner.run(agent, words(12, f"question{n}"), session=tas, run_config=RUN_CONFIG)
        assert result.final_output == words(12, f"answer{n}")
        assert tas.last_view is not None
        assert tas.last_view.tokens <= 100

    assert summarizer.requests
    for call_ in model.calls:
        check_pairs(list(call_.input))
    last_input = cast(list[dict[str, Any]], model.calls[-1].input)
    assert is_summary_item(last_input[0])
    assert is_user_message(last_input[1])
    assert last_input[-1] == new_input(words(12, "question6"))
    model.assert_complete()
    # Turns carry their user message's seq (10, 20, ...): the summary covers every message before the first kept one.
    through = await db.fetchval("SELECT summarized_through_seq FROM sessions WHERE id = $1", session_id)
    first_kept = next(n for n in range(1, 7) if last_input[1] == user(words(12, f"question{n}")))
    assert through == first_kept * 10 - 1


async def test_an_interrupted_tool_call_is_closed_and_the_next_run_works(pool: asyncpg.Pool, session_id: str) -> None:
    model = ScriptedModel([[function_call("slow_lookup", {"query": "x"}, call_id="call-slow")]])
    agent = Agent(name="assistant", model=model, tools=[slow_lookup])
    tas = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=1000, turn_seq=1)
    run = Runner.run_streamed(agent, "look it up", session=tas, run_config=RUN_CONFIG)
    seen: list[Any] = []
    async for event in run.stream_events():
        if event.type == "run_item_stream_event" and event.name == "tool_called":
            seen.append(event.item.raw_item)
            run.cancel("immediate")
    assert seen, "the tool was never called"

    closed = await tas.add_partial_turn(seen)
    assert closed == ["call-slow"]

    model.extend([[assistant_message("Sorry, interrupted before.")]])
    next_run = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=1000, turn_seq=3)
    result = await Runner.run(agent, "and now?", session=next_run, run_config=RUN_CONFIG)
    assert result.final_output == "Sorry, interrupted before."
    sent = cast(list[dict[str, Any]], model.calls[-1].input)
    check_pairs(sent)
    assert [i.get("type", "message") for i in sent] == ["message", "function_call", "function_call_output", "message"]
    assert sent[2]["output"] == "interrupted"


async def test_the_view_converts_to_chat_completions_messages(pool: asyncpg.Pool, session_id: str) -> None:
    from agents.models.chatcmpl_converter import Converter

    summarizer = RecordingSummarizer()
    tas = TokenAwareSession.open(
        pool, session_id, counter=COUNTER, context_window=100, reserve_tokens=10, summarize=summarizer
    )
    for n in range(1, 4):
        await add_small_turn(tas, n)
    await tas.add_items(as_items(user("q"), call("c1"), output("c1", "x"), assistant("done")))
    messages = Converter.items_to_messages(await tas.get_items(), strict_feature_validation=True)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "tool", "assistant"]
    assert str(messages[0]["content"]).startswith(SUMMARY_PREFIX)


async def test_a_run_interrupted_before_any_answer_keeps_the_users_message(pool: asyncpg.Pool, session_id: str) -> None:
    started = asyncio.Event()

    async def never(call_: ModelCall) -> Any:
        started.set()
        await asyncio.Event().wait()

    model = ScriptedModel([ModelStep.respond(never), [assistant_message("Picking up.")]])
    agent = Agent(name="assistant", model=model)
    tas = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=1000, turn_seq=1)
    run = Runner.run_streamed(agent, "think forever", session=tas, run_config=RUN_CONFIG)

    async def interrupt() -> None:
        await started.wait()
        run.cancel("immediate")

    async with asyncio.TaskGroup() as group:
        group.create_task(interrupt())
        async for _ in run.stream_events():
            pass
    # The chat service hands over the user's message with whatever was produced; nothing is stored twice.
    assert await tas.add_partial_turn([user("think forever")]) == []
    assert await tas.add_partial_turn([user("think forever")]) == []

    next_run = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=1000, turn_seq=3)
    result = await Runner.run(agent, "go on", session=next_run, run_config=RUN_CONFIG)
    assert result.final_output == "Picking up."
    assert model.calls[-1].input == [user("think forever"), new_input("go on")]


async def test_a_run_can_leave_the_context_size_to_its_end_and_read_its_history_ahead(
    pool: asyncpg.Pool, session_id: str, db: asyncpg.Connection
) -> None:
    writer = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=80, reserve_tokens=0)
    turns = await three_turns(writer)
    tas = TokenAwareSession(
        writer.store,
        context_window=80,
        reserve_tokens=0,
        history=await writer.store.unsummarized(),
        record_context_tokens=False,
    )
    assert await tas.get_items() == turns[1] + turns[2]  # the prefetched rows, fitted like a fresh read
    assert tas.last_view is not None
    assert tas.last_view.tokens == 72
    assert await db.fetchval("SELECT context_tokens FROM sessions WHERE id = $1", session_id) == 0
    # The prefetched rows serve one `get_items()` only: the next one reads what is stored now.
    await tas.add_items(as_items(user("again")))
    assert (await tas.get_items())[-1] == user("again")


async def test_a_deferred_write_returns_at_once_and_every_later_call_waits_for_it(
    pool: asyncpg.Pool, session_id: str, db: asyncpg.Connection
) -> None:
    store = PostgresSession(pool, session_id, counter=COUNTER, turn_seq=1)
    tas = TokenAwareSession(store, context_window=200, defer_first_write=True)
    async with db.transaction():
        # The session row is locked elsewhere: the write waits for it, the caller does not.
        await db.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", session_id)
        async with asyncio.timeout(5):
            await tas.add_items(as_items(user("first")))
        reading = asyncio.create_task(tas.get_items(limit=5))
        await asyncio.sleep(0.2)
        assert not reading.done()  # it waits for the write, which waits for the lock
    assert await reading == [user("first")]
    assert not tas.defer_next_write  # one write only: the next one is written before add_items returns
    await tas.add_items(as_items(assistant("second")))
    assert await db.fetchval("SELECT count(*) FROM llm_context WHERE session_id = $1", session_id) == 2


async def test_a_deferred_write_that_fails_raises_in_the_next_call(
    pool: asyncpg.Pool, session_id: str, db: asyncpg.Connection
) -> None:
    store = PostgresSession(pool, session_id, counter=COUNTER, turn_seq=1)
    tas = TokenAwareSession(store, context_window=200, defer_first_write=True)
    await db.execute("DELETE FROM sessions WHERE id = $1", session_id)
    await tas.add_items(as_items(user("lost")))  # returns: the write fails in the background
    with pytest.raises(LookupError):
        await tas.add_items(as_items(assistant("next")))
    await tas.flush()  # raised once; nothing is pending now


async def test_a_turn_larger_than_a_summary_request_is_cut_to_fit(pool: asyncpg.Pool, session_id: str) -> None:
    """Found on a real server: the oldest turn alone was over the window, so the summary request got a 400 every
    turn. Requests are cut to fit by construction."""
    summarizer = RecordingSummarizer()
    tas = TokenAwareSession.open(
        pool, session_id, counter=COUNTER, context_window=100, reserve_tokens=10, summarize=summarizer
    )
    await tas.add_items(as_items(user(words(10, "q1")), assistant(words(300, "a1"))))
    for n in range(2, 4):
        await add_small_turn(tas, n)
    await tas.get_items()
    assert summarizer.requests
    for request in summarizer.requests:
        assert COUNTER.count_text(summary_prompt(request)) <= tas.summary_input_tokens


async def test_a_failed_summary_is_not_asked_for_again_with_the_same_input(
    pool: asyncpg.Pool, session_id: str, db: asyncpg.Connection
) -> None:
    summarizer = RecordingSummarizer(fail=True)

    def session() -> TokenAwareSession:
        return TokenAwareSession.open(
            pool, session_id, counter=COUNTER, context_window=100, reserve_tokens=10, summarize=summarizer
        )

    for n in range(1, 6):
        await add_small_turn(session(), n)
    await session().get_items()
    asked = len(summarizer.requests)
    assert asked >= 1
    await session().get_items()  # the same history: trimmed, not asked again
    assert len(summarizer.requests) == asked
    failed = await db.fetchval("SELECT summary_failed_through_seq FROM sessions WHERE id = $1", session_id)
    assert failed is not None

    summarizer.fail = False
    for n in range(6, 8):
        await add_small_turn(session(), n)
    got = await session().get_items()  # the history moved on: asked again, and it works
    assert len(summarizer.requests) > asked
    assert is_summary_item(got[0])
    assert await db.fetchval("SELECT summary_failed_through_seq FROM sessions WHERE id = $1", session_id) is None


async def test_a_newest_turn_over_the_budget_is_sent_cut_not_dropped(pool: asyncpg.Pool, session_id: str) -> None:
    """Found on a real server: an answer that filled the window left the next turn with no memory at all."""
    tas = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=100, reserve_tokens=10)
    await tas.add_items(as_items(user(words(10, "q1")), assistant(words(300, "a1"))))
    view = await tas.view()
    assert 0 < view.tokens <= view.budget
    texts = [str(i["content"]) for i in view.items]
    assert texts[0].startswith("q1")
    assert "a1" in texts[1]
    assert "left out" in texts[1]
    # Storage keeps the whole answer.
    stored = await tas.get_items(limit=10)
    assert stored[-1] == assistant(words(300, "a1"))


async def test_the_next_view_fitted_from_the_first_views_turns_is_a_fresh_reads(
    pool: asyncpg.Pool, session_id: str, db: asyncpg.Connection
) -> None:
    """`record_usage` groups only the run's rows anew: with tool calls, a call of an earlier turn answered by the
    run (its turns merge), and a budget that drops turns, its view is still the one a fresh read fits."""
    tas = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=1000)
    await three_turns(tas)
    await tas.add_items(as_items(user("ask"), call("open")))  # a call left open in turn 4
    for budget_window, answered in ((1000, False), (1000, True), (160, False)):
        run = TokenAwareSession.open(pool, session_id, counter=COUNTER, context_window=budget_window, reserve_tokens=0)
        await run.get_items()
        produced = [output("open", "late"), assistant("done")] if answered else [assistant(words(6))]
        await run.add_items(as_items(user(words(3)), *produced))
        view = await run.record_usage(input_tokens=300, output_tokens=20, overhead_tokens=10)
        fresh = await TokenAwareSession.open(
            pool, session_id, counter=COUNTER, context_window=budget_window, reserve_tokens=0
        ).view()
        assert (view.tokens, view.items, view.row_ids, view.kept_turns, view.dropped_turns) == (
            fresh.tokens,
            fresh.items,
            fresh.row_ids,
            fresh.kept_turns,
            fresh.dropped_turns,
        )
        check_pairs(view.items)
