"""The chat socket end to end: real uvicorn, real PostgreSQL, the fake OpenAI server, the `websockets` client.

Each test follows a rule of CONTRACT.md section 3.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from chinwag.llm.tokens import TiktokenCounter
from chinwag.services.token_aware_session import default_reserve
from tests.conftest import STOCK_TOO, ServerFactory, UserFactory
from tests.fakes.openai_script import fail, say
from tests.fakes.openai_server import FakeOpenAI
from tests.routes.chat_support import Chat, connect, new_session, text_of


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


@pytest.fixture
async def chat(fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory) -> Chat:
    server = await server_factory(openai_base_url=fake.base_url, models="gpt-4.1-mini:1000000")
    user = await user_factory(server)
    return Chat.on(server, user, await new_session(server, user))


async def close_code(url: str) -> tuple[int | None, list[str]]:
    """Connect and read until the server closes; returns the close code and the frames seen before it."""
    frames: list[str] = []
    async with websockets.connect(url, open_timeout=10) as ws:
        try:
            async with asyncio.timeout(10):
                while True:
                    raw = await ws.recv()
                    frames.append(str(raw))
        except ConnectionClosed:
            pass
        return ws.close_code, frames


async def read_forever(ws: websockets.ClientConnection) -> None:
    async with asyncio.timeout(10):
        while True:
            await ws.recv()


# --- connecting -----------------------------------------------------------------------------------------------------


async def test_bad_or_missing_token_closes_4401_before_any_frame(chat: Chat) -> None:
    base = f"{chat.ws_base}/ws/chat/{chat.session_id}"
    assert await close_code(base) == (4401, [])
    assert await close_code(base + "?token=nonsense") == (4401, [])
    assert await close_code(base + "?token=") == (4401, [])


async def test_a_session_not_the_users_closes_4404(chat: Chat, user_factory: UserFactory) -> None:
    other = await user_factory(chat.running)
    assert await close_code(chat.url(token=other.access_token)) == (4404, [])
    assert await close_code(chat.url(session_id=str(uuid.uuid4()))) == (4404, [])
    assert await close_code(chat.url(session_id="not-an-id")) == (4404, [])


async def test_ready_then_ping_pong(chat: Chat) -> None:
    async with connect(chat) as sock:
        assert sock.ready == {"type": "ready", "session_id": chat.session_id, "active_run": None}
        await sock.ping()


async def test_an_api_key_works_as_the_token(chat: Chat) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=chat.base_url + "/api/v1", headers=chat.user.headers, timeout=60) as c:
        answer = await c.post("/auth/api-keys", json={"name": "script"})
        assert answer.status_code == 201, answer.text
        key = answer.json()["key"]
    async with connect(chat, token=key) as sock:
        await sock.ping()


# --- a run ----------------------------------------------------------------------------------------------------------


@STOCK_TOO
async def test_a_message_streams_a_numbered_run_and_the_history_matches(
    chat: Chat, fake: FakeOpenAI, db: asyncpg.Connection
) -> None:
    fake.script(say("The answer is forty-two, as everyone knows.", input_tokens=30, output_tokens=9))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "What is the answer?", "client_id": "c-1"})
        frames = await sock.until("assistant_end")
    run_id = frames[0]["run_id"]
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert all(f["run_id"] == run_id for f in frames)
    kinds = [f["type"] for f in frames]
    assert kinds[:2] == ["user_message", "assistant_start"]
    assert set(kinds[2:-1]) == {"text_delta"}
    assert len(kinds) > 5  # streamed token by token
    user_message = frames[0]["message"]
    assert (user_message["role"], user_message["content"], user_message["client_id"]) == (
        "user",
        "What is the answer?",
        "c-1",
    )
    end = frames[-1]
    assert end["finish_reason"] == "stop"
    assert end["message_id"] == frames[1]["message_id"]
    assert end["usage"] == {"input_tokens": 30, "output_tokens": 9}
    assert end["context"]["limit"] == 1000000
    assert end["context"]["tokens"] > 0
    # Deltas never repeat text: the largest frame is about one token.
    assert max(len(f["delta"]) for f in frames if f["type"] == "text_delta") < 15

    history = await chat.history()
    assert [(m["seq"], m["role"], m["status"]) for m in history] == [
        (1, "user", "complete"),
        (2, "assistant", "complete"),
    ]
    assert history[0] == user_message
    assert history[1]["id"] == end["message_id"]
    assert history[1]["content"] == text_of(frames) == "The answer is forty-two, as everyone knows."
    assert history[1]["usage"] == {"input_tokens": 30, "output_tokens": 9}
    assert history[1]["run_id"] == run_id
    session = await chat.session()
    assert session["usage"] == {"input_tokens": 30, "output_tokens": 9}
    assert session["active_run_id"] is None
    assert session["context"]["tokens"] == end["context"]["tokens"]
    # The model got the message over the real OpenAI client path, with the server's instructions.
    request = fake.requests[0]
    assert request.last_user_text == "What is the answer?"
    assert request.body["stream"] is True
    assert "helpful assistant" in str(request.body["messages"][0])


async def test_two_tabs_see_the_same_events(chat: Chat, fake: FakeOpenAI) -> None:
    fake.script(say("One two three four five six seven.", delay=0.01))
    async with connect(chat) as tab1, connect(chat) as tab2:
        await tab1.send({"type": "message", "content": "count"})
        first = await tab1.until("assistant_end")
        second = await tab2.until("assistant_end")
        assert first == second
        await tab1.quiet(0.1)
        await tab2.quiet(0.1)


async def test_the_run_survives_its_socket_and_resumes_without_gap_or_duplicate(chat: Chat, fake: FakeOpenAI) -> None:
    words = " ".join(f"w{i}" for i in range(60))
    fake.script(say(words, delay=0.02))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "talk"})
        seen = [await sock.recv() for _ in range(8)]
    run_id = seen[0]["run_id"]
    await asyncio.sleep(0.3)  # the run goes on with nobody listening
    async with connect(chat) as sock:
        active = sock.ready["active_run"]
        assert active is not None
        assert active["run_id"] == run_id
        assert active["last_seq"] > 8
        await sock.send({"type": "resume", "run_id": run_id, "after_seq": 8})
        rest = await sock.until("assistant_end")
    frames = seen + rest
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert text_of(frames) == words
    history = await chat.history()
    assert history[1]["content"] == words
    assert history[1]["status"] == "complete"


async def test_a_tab_opened_mid_run_sees_the_rest_of_it_without_resuming(chat: Chat, fake: FakeOpenAI) -> None:
    words = " ".join(f"w{i}" for i in range(40))
    fake.script(say(words, delay=0.02))
    async with connect(chat) as first:
        await first.send({"type": "message", "content": "talk"})
        everything = [await first.recv() for _ in range(6)]
        async with connect(chat) as late:
            active = late.ready["active_run"]
            assert active is not None
            rest = await late.until("assistant_end")
        everything += await first.until("assistant_end")
    assert [f["seq"] for f in rest] == list(range(active["last_seq"] + 1, everything[-1]["seq"] + 1))
    assert rest == everything[active["last_seq"] :]


async def test_a_finished_run_can_be_replayed_then_not_after_retention(chat: Chat, fake: FakeOpenAI) -> None:
    fake.script(say("short answer here"))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "hi"})
        frames = await sock.until("assistant_end")
    run_id = frames[0]["run_id"]
    async with connect(chat) as sock:
        assert sock.ready["active_run"] is None
        await sock.send({"type": "resume", "run_id": run_id, "after_seq": 0})
        replay = [await sock.recv() for _ in frames]
        assert replay == frames
        await sock.send({"type": "resume", "run_id": run_id, "after_seq": 2})
        await sock.ping()  # this socket was sent them all already: nothing again
        await sock.send({"type": "resume", "run_id": str(uuid.uuid4()), "after_seq": 0})
        unknown = await sock.recv()
        assert unknown["type"] == "error"
        assert unknown["code"] == "resume_unavailable"
        chat.running.app.state.chat.deps.buffers.retention_s = 0.0
        await asyncio.sleep(0.01)
    async with connect(chat) as sock:
        await sock.send({"type": "resume", "run_id": run_id, "after_seq": 0})
        expired = await sock.recv()
        assert (expired["type"], expired["code"], expired["run_id"]) == ("error", "resume_unavailable", run_id)


async def test_busy_while_a_run_is_active_and_client_id_is_idempotent(chat: Chat, fake: FakeOpenAI) -> None:
    fake.script(say("slow words " * 10, delay=0.03))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "first", "client_id": "abc"})
        start = await sock.until("assistant_start")
        await sock.send({"type": "message", "content": "second"})
        frames = await sock.until("error")
        busy = frames[-1]
        assert (busy["code"], busy["retryable"]) == ("busy", True)
        await sock.send({"type": "message", "content": "first", "client_id": "abc"})
        rest = await sock.until("assistant_end")
        assert all(f["type"] != "user_message" for f in frames[:-1] + rest)
        assert all(f["type"] != "error" for f in rest)
        await sock.send({"type": "message", "content": "first", "client_id": "abc"})
        await sock.ping()
        await sock.quiet(0.2)
    history = await chat.history()
    assert [m["content"] for m in history if m["role"] == "user"] == ["first"]
    assert start[0]["message"]["client_id"] == "abc"
    assert len(fake.requests) == 1


# --- interrupts -----------------------------------------------------------------------------------------------------


@STOCK_TOO
async def test_interrupt_mid_text_keeps_what_was_streamed_and_the_next_message_works(
    chat: Chat, fake: FakeOpenAI
) -> None:
    fake.script(say(" ".join(f"t{i}" for i in range(200)), delay=0.02), say("Fresh start."))
    async with connect(chat) as sock, connect(chat) as other:
        await sock.send({"type": "message", "content": "go on and on"})
        frames = [await sock.recv() for _ in range(10)]
        await other.send({"type": "interrupt"})  # from another socket
        frames += await sock.until("assistant_end", timeout=30)
        end = frames[-1]
        assert end["finish_reason"] == "interrupted"
        streamed = text_of(frames)
        history = await chat.history()
        assert history[1]["status"] == "interrupted"
        assert history[1]["content"] == streamed
        assert 0 < len(streamed) < 200 * 4
        await other.until("assistant_end")

        await sock.send({"type": "message", "content": "again"})
        second = await sock.until("assistant_end")
        assert second[-1]["finish_reason"] == "stop"
        assert text_of(second) == "Fresh start."
    # The model saw the interrupted answer as far as it went.
    messages = fake.requests[1].body["messages"]
    assert any(m.get("role") == "assistant" and str(m.get("content", "")).startswith("t0 t1") for m in messages)


async def test_interrupt_before_the_first_token_ends_the_run_at_once(chat: Chat, fake: FakeOpenAI) -> None:
    fake.script(say("too late", stall_before=30), say("Here now."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "hello?"})
        await sock.until("assistant_start")
        await fake.wait_for_requests(1)
        await sock.send({"type": "interrupt"})
        frames = await sock.until("assistant_end", timeout=20)  # within the 30 s stall: the interrupt ended it
        assert frames[-1]["finish_reason"] == "interrupted"
        assert text_of(frames) == ""
        await sock.send({"type": "message", "content": "again"})
        again = await sock.until("assistant_end")
        assert text_of(again) == "Here now."
    history = await chat.history()
    assert [(m["role"], m["status"]) for m in history] == [
        ("user", "complete"),
        ("assistant", "interrupted"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    # The model still learns what was asked before the interrupt, once.
    said = [m.get("content") for m in fake.requests[-1].body["messages"] if m["role"] == "user"]
    assert said == ["hello?", "again"]


async def test_interrupt_without_a_run_is_not_found(chat: Chat) -> None:
    async with connect(chat) as sock:
        await sock.send({"type": "interrupt"})
        error = await sock.recv()
        assert (error["type"], error["code"]) == ("error", "not_found")
        await sock.ping()


# --- model errors ---------------------------------------------------------------------------------------------------


@STOCK_TOO
@pytest.mark.parametrize(
    ("replies", "retryable"),
    [
        pytest.param([fail(500), fail(500), fail(500)], True, id="500"),
        pytest.param([fail(429, retry_after=0.01)] * 3, True, id="429"),
        pytest.param([fail(400)], False, id="400"),
        pytest.param([say("partial answer that drops", drop_after=2)], True, id="drop"),
    ],
)
async def test_a_provider_error_ends_the_run_with_llm_error(
    chat: Chat, fake: FakeOpenAI, replies: list[Any], retryable: bool
) -> None:
    fake.script(*replies, say("recovered"))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "hello"})
        frames = await sock.until("assistant_end", timeout=30)
        error = next(f for f in frames if f["type"] == "error")
        assert error["code"] == "llm_error"
        assert error["retryable"] is retryable
        assert error["run_id"] == frames[0]["run_id"]
        assert frames[-1]["finish_reason"] == "error"
        assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
        history = await chat.history()
        assert history[1]["status"] == "error"
        assert history[1]["content"] == text_of(frames)
        await sock.send({"type": "message", "content": "retry"})
        again = await sock.until("assistant_end")
        assert again[-1]["finish_reason"] == "stop"


# --- bad frames -----------------------------------------------------------------------------------------------------


BAD_FRAMES: list[str | bytes] = [
    "not json",
    "[1, 2, 3]",
    "42",
    '{"no_type": 1}',
    '{"type": "dance"}',
    '{"type": "message"}',
    '{"type": "message", "content": 7}',
    '{"type": "message", "content": ""}',
    '{"type": "message", "content": "   \\n "}',
    '{"type": "message", "content": "nul \\u0000 here"}',
    '{"type": "message", "content": "half \\ud800 pair"}',
    '{"type": "message", "content": "x", "client_id": 5}',
    '{"type": "message", "content": "x", "file_ids": ["00000000-0000-0000-0000-000000000000"]}',
    '{"type": "message", "content": "x", "file_ids": "nope"}',
    '{"type": "resume", "run_id": "r"}',
    '{"type": "resume", "run_id": "r", "after_seq": "1"}',
    b"\x00\x01binary",
]


async def test_a_bad_frame_gets_bad_request_and_the_socket_stays_open(chat: Chat, fake: FakeOpenAI) -> None:
    async with connect(chat) as sock:
        for frame in BAD_FRAMES:
            await sock.send(frame)
            error = await sock.recv()
            assert error["type"] == "error", frame
            assert error["code"] == "bad_request", frame
            assert error["message"]
            await sock.ping()
    assert await chat.history() == []
    assert fake.requests == []


async def test_content_over_the_limit_is_refused(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    server = await server_factory(openai_base_url=fake.base_url, max_message_chars=50)
    user = await user_factory(server)
    chat = Chat.on(server, user, await new_session(server, user))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "x" * 51})
        error = await sock.recv()
        assert (error["type"], error["code"]) == ("error", "bad_request")
        await sock.ping()
    assert await chat.history() == []


async def test_a_frame_over_one_mib_closes_1009(chat: Chat) -> None:
    async with websockets.connect(chat.url(), max_size=None) as ws:
        await ws.recv()  # ready
        await ws.send("x" * (1024 * 1024 + 1))
        with pytest.raises(ConnectionClosed):
            await read_forever(ws)
        assert ws.close_code == 1009


async def test_a_socket_that_closes_mid_run_does_not_disturb_the_others(chat: Chat, fake: FakeOpenAI) -> None:
    fake.script(say("a b c d e f g h i j k l m n o p", delay=0.02))
    async with connect(chat) as stays:
        async with connect(chat) as leaves:
            await stays.send({"type": "message", "content": "go"})
            await leaves.recv()
        frames = await stays.until("assistant_end")
    assert text_of(frames) == "a b c d e f g h i j k l m n o p"


async def test_the_first_exchange_names_the_session_for_every_tab(chat: Chat, fake: FakeOpenAI) -> None:
    async with connect(chat) as sock:
        session_id = await new_session(chat.running, chat.user, title="")
        untitled = Chat.on(chat.running, chat.user, session_id)
        fake.script(say("It is noon in Paris."), say('"Noon in Paris."'), say("Still noon."))
        async with connect(untitled) as tab1, connect(untitled) as tab2:
            await tab1.send({"type": "message", "content": "What time is it in Paris?"})
            await tab1.until("assistant_end")
            updated = (await tab1.until("session_updated"))[-1]
            assert (await tab2.until("session_updated"))[-1] == updated
            assert updated["session"]["id"] == session_id
            assert updated["session"]["title"] == "Noon in Paris"
            title_request = fake.requests[1]
            assert "What time is it in Paris?" in str(title_request.body["messages"])
            assert "It is noon in Paris." in str(title_request.body["messages"])
            # Only the first exchange: the second run asks for no title.
            await tab1.send({"type": "message", "content": "And now?"})
            await tab1.until("assistant_end")
            await tab1.quiet(0.3)
        assert (await untitled.session())["title"] == "Noon in Paris"
        await sock.quiet(0.05)  # another session's socket heard nothing of it
    assert len(fake.requests) == 3


async def test_a_message_with_file_ids_gives_the_model_those_files(chat: Chat, fake: FakeOpenAI) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=chat.base_url + "/api/v1", headers=chat.user.headers, timeout=60) as c:
        answer = await c.post(
            f"/sessions/{chat.session_id}/files",
            files={"file": ("notes.txt", b"The secret word is marmalade.\n", "text/plain")},
        )
        assert answer.status_code == 201, answer.text
        file_id = answer.json()["id"]
    fake.script(say("Marmalade."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "What is the secret word?", "file_ids": [file_id]})
        frames = await sock.until("assistant_end")
    assert frames[-1]["finish_reason"] == "stop"
    system = fake.requests[0].body["messages"][0]
    assert system["role"] in ("system", "developer")
    assert "The secret word is marmalade." in str(system["content"])
    assert "notes.txt" in str(system["content"])
    tools = {t["function"]["name"] for t in fake.requests[0].body.get("tools", [])}
    assert {"list_files", "read_file", "search_files"} <= tools


async def test_messages_past_the_per_user_limit_are_rate_limited(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    server = await server_factory(openai_base_url=fake.base_url, chat_messages_per_minute=2)
    user = await user_factory(server)
    chat = Chat.on(server, user, await new_session(server, user))
    fake.script(say("one"), say("two"), say("three"))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "first", "client_id": "a"})
        await sock.until("assistant_end")
        await sock.send({"type": "message", "content": "first", "client_id": "a"})  # a duplicate does not count
        await sock.send({"type": "message", "content": "second"})
        await sock.until("assistant_end")
        await sock.send({"type": "message", "content": "third"})
        limited = await sock.recv()
        assert (limited["type"], limited["code"], limited["retryable"]) == ("error", "rate_limited", True)
        assert "try again in" in limited["message"]
        await sock.ping()
    assert [m["content"] for m in await chat.history() if m["role"] == "user"] == ["first", "second"]


async def test_the_history_sent_leaves_room_for_instructions_and_the_answer(
    server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    window = 2000
    async with FakeOpenAI.start(default=say("ok")) as model:
        server = await server_factory(openai_base_url=model.base_url, models=f"tiny:{window}")
        user = await user_factory(server)
        instructions = "Remember this rule. " * 150  # about 600 tokens, sent on every turn
        chat = Chat.on(server, user, await new_session(server, user, instructions=instructions))
        async with connect(chat) as sock:
            for i in range(6):
                await sock.send({"type": "message", "content": f"question {i}: " + "lorem ipsum " * 150})
                await sock.until("assistant_end")
        counter = TiktokenCounter()
        turns = [r for r in model.requests if r.body.get("stream") and "Remember this rule" in str(r.body)]
        assert len(turns) == 6
        last = turns[-1].body["messages"]
        sent = sum(counter.count_text(str(m.get("content") or "")) for m in last)
        assert sent <= window - default_reserve(window), f"{sent} tokens sent to a {window}-token window"
        assert last[-1]["content"].startswith("question 5"), "the new message is always sent"
