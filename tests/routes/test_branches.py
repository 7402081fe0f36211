"""Branches end to end: regenerate, edit, previous/next versions (`POST /branch`), over the real socket, with the
fake model server recording what the model was sent (CONTRACT.md section 4, "Branches")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import ServerFactory, UserFactory
from tests.fakes.openai_script import say
from tests.fakes.openai_server import FakeOpenAI
from tests.routes.chat_support import Chat, Socket, connect, new_session


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


@pytest.fixture
async def chat(fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory) -> Chat:
    server = await server_factory(openai_base_url=fake.base_url, models="gpt-4.1-mini:1000000")
    user = await user_factory(server)
    return Chat.on(server, user, await new_session(server, user))


def text(content: Any) -> str:
    """A message's text, whether a string or a list of parts."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content)
    return str(content)


def sent(fake: FakeOpenAI, index: int = -1) -> list[tuple[str, str]]:
    """(role, text) of the conversation in a recorded model request, instructions left out."""
    out = []
    for message in fake.requests[index].body["messages"]:
        if message["role"] in ("system", "developer"):
            continue
        out.append((message["role"], text(message["content"])))
    return out


async def turn(sock: Socket, frame: dict[str, Any]) -> list[dict[str, Any]]:
    await sock.send(frame)
    frames = await sock.until("assistant_end")
    assert all(f["type"] != "error" for f in frames), frames
    return frames


async def switch(chat: Chat, seq: int) -> httpx.Response:
    async with httpx.AsyncClient(base_url=chat.base_url + "/api/v1", headers=chat.user.headers, timeout=60) as c:
        return await c.post(f"/sessions/{chat.session_id}/branch", json={"seq": seq})


async def test_regenerate_twice_then_switch_back_to_the_first_answer(chat: Chat, fake: FakeOpenAI) -> None:
    fake.script(say("Answer one."), say("Answer two."), say("Answer three."), say("After one."))
    async with connect(chat) as sock:
        await turn(sock, {"type": "message", "content": "Question?"})
        frames = await turn(sock, {"type": "regenerate"})
        # A regenerated answer has no new user message: the run starts at assistant_start.
        assert [f["type"] for f in frames if f["type"] in ("user_message", "assistant_start")] == ["assistant_start"]
        await turn(sock, {"type": "regenerate", "seq": 1})

    # Each regenerate answered the same question: the model saw it once, and no earlier answer.
    assert sent(fake, 1) == [("user", "Question?")]
    assert sent(fake, 2) == [("user", "Question?")]
    history = await chat.history()
    assert [(m["seq"], m["role"], m["content"]) for m in history] == [
        (1, "user", "Question?"),
        (4, "assistant", "Answer three."),
    ]
    assert history[1]["sibling_seqs"] == [2, 3, 4]
    assert history[1]["parent_seq"] == 1
    assert history[0]["parent_seq"] is None
    assert history[0]["sibling_seqs"] == [1]
    assert (await chat.session())["leaf_seq"] == 4

    answer = await switch(chat, 2)
    assert answer.status_code == 200, answer.text
    assert answer.json()["leaf_seq"] == 2
    history = await chat.history()
    assert [(m["seq"], m["content"]) for m in history] == [(1, "Question?"), (2, "Answer one.")]
    assert history[1]["sibling_seqs"] == [2, 3, 4]

    # GET /context shows what the next run sends: this branch, nothing of the other answers.
    async with httpx.AsyncClient(base_url=chat.base_url + "/api/v1", headers=chat.user.headers, timeout=60) as c:
        context = (await c.get(f"/sessions/{chat.session_id}/context")).json()
    assert [(i["role"], text(i["content"])) for i in context["items"]] == [
        ("user", "Question?"),
        ("assistant", "Answer one."),
    ]
    assert (await chat.session())["context"]["tokens"] == context["tokens"]
    async with connect(chat) as sock:
        frames = await turn(sock, {"type": "message", "content": "And then?"})
    assert sent(fake) == [("user", "Question?"), ("assistant", "Answer one."), ("user", "And then?")]
    user = next(f["message"] for f in frames if f["type"] == "user_message")
    assert (user["seq"], user["parent_seq"], user["sibling_seqs"]) == (5, 2, [5])
    assert [m["seq"] for m in await chat.history()] == [1, 2, 5, 6]


async def test_edit_the_second_of_five_questions(chat: Chat, fake: FakeOpenAI) -> None:
    fake.script(*(say(f"Answer {i}.") for i in range(1, 6)), say("Answer to the edit."))
    async with connect(chat) as sock:
        for i in range(1, 6):
            await turn(sock, {"type": "message", "content": f"Question {i}?"})
        frames = await turn(sock, {"type": "edit", "seq": 3, "content": "Question 2, better?", "client_id": "e1"})
    user = next(f["message"] for f in frames if f["type"] == "user_message")
    assert (user["seq"], user["parent_seq"], user["sibling_seqs"]) == (11, 2, [3, 11])
    assert user["content"] == "Question 2, better?"
    assert sent(fake) == [("user", "Question 1?"), ("assistant", "Answer 1."), ("user", "Question 2, better?")]
    history = await chat.history()
    assert [m["content"] for m in history] == ["Question 1?", "Answer 1.", "Question 2, better?", "Answer to the edit."]

    # The earlier version is one switch away, with everything that followed it.
    assert (await switch(chat, 3)).json()["leaf_seq"] == 10
    assert [m["seq"] for m in await chat.history()] == list(range(1, 11))


async def test_edit_of_the_first_message_makes_a_second_root(chat: Chat, fake: FakeOpenAI) -> None:
    fake.script(say("One."), say("Two."))
    async with connect(chat) as sock:
        await turn(sock, {"type": "message", "content": "Hello"})
        frames = await turn(sock, {"type": "edit", "seq": 1, "content": "Hi"})
    user = next(f["message"] for f in frames if f["type"] == "user_message")
    assert (user["seq"], user["parent_seq"], user["sibling_seqs"]) == (3, None, [1, 3])
    assert sent(fake) == [("user", "Hi")]
    assert [m["content"] for m in await chat.history()] == ["Hi", "Two."]


async def test_bad_seqs_are_bad_requests_and_change_nothing(chat: Chat, fake: FakeOpenAI) -> None:
    fake.script(say("One."), say("Two."))
    async with connect(chat) as sock:
        await sock.send({"type": "regenerate"})
        assert (await sock.until("error"))[-1]["code"] == "bad_request"  # nothing to answer yet
        await turn(sock, {"type": "message", "content": "Hello"})
        await turn(sock, {"type": "edit", "seq": 1, "content": "Hi"})
        for frame in (
            {"type": "edit", "seq": 2, "content": "an answer is not a question"},
            {"type": "edit", "seq": 1, "content": "seq 1 is off the active branch now"},
            {"type": "regenerate", "seq": 1},
            {"type": "regenerate", "seq": 99},
            {"type": "edit", "seq": 3, "content": "   "},
            {"type": "edit", "seq": 0, "content": "x"},
            {"type": "edit", "content": "x"},
        ):
            await sock.send(frame)
            error = (await sock.until("error"))[-1]
            assert error["code"] == "bad_request", (frame, error)
        await sock.ping()
    assert len(fake.requests) == 2
    assert [m["seq"] for m in await chat.history()] == [3, 4]
    assert (await switch(chat, 99)).status_code == 404
    assert (await switch(chat, 0)).status_code == 422


async def test_a_branch_switch_edit_or_regenerate_during_a_run_is_busy(chat: Chat, fake: FakeOpenAI) -> None:
    fake.script(say("One."), say("slow words " * 20, delay=0.05))
    async with connect(chat) as sock:
        await turn(sock, {"type": "message", "content": "Hello"})
        await sock.send({"type": "message", "content": "Go on"})
        await sock.until("assistant_start")
        answer = await switch(chat, 1)
        assert (answer.status_code, answer.json()["code"]) == (409, "busy")
        for frame in ({"type": "regenerate"}, {"type": "edit", "seq": 1, "content": "x"}):
            await sock.send(frame)
            error = (await sock.until("error"))[-1]
            assert (error["code"], error["retryable"]) == ("busy", True)
        await sock.send({"type": "interrupt"})
        await sock.until("assistant_end")
    assert [m["seq"] for m in await chat.history()] == [1, 2, 3, 4]


async def test_every_socket_hears_of_a_branch_switch(chat: Chat, fake: FakeOpenAI) -> None:
    fake.script(say("One."), say("Two."))
    async with connect(chat) as sock:
        await turn(sock, {"type": "message", "content": "Hello"})
        await turn(sock, {"type": "regenerate"})
        async with connect(chat) as other:
            assert (await switch(chat, 2)).status_code == 200
            for s in (sock, other):
                update = (await s.until("session_updated"))[-1]
                assert update["session"]["leaf_seq"] == 2
