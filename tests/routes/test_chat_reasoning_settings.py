"""Reasoning and model settings, end to end: real uvicorn, real PostgreSQL, the fake OpenAI server (which records
every request), over the real socket, on both model APIs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import ServerFactory, UserFactory
from tests.fakes.openai_script import say
from tests.fakes.openai_server import FakeOpenAI
from tests.routes.chat_support import Chat, connect, new_session, text_of

APIS = ["chat_completions", "responses"]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


async def chat_on(fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, **settings: Any) -> Chat:
    server = await server_factory(openai_base_url=fake.base_url, models="gpt-4.1-mini:1000000", **settings)
    user = await user_factory(server)
    return Chat.on(server, user, await new_session(server, user))


def api_client(chat: Chat) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=chat.base_url + "/api/v1", headers=chat.user.headers, timeout=30)


@pytest.mark.parametrize("api", APIS)
async def test_reasoning_streams_as_reasoning_delta_is_kept_and_never_sent_back_as_text(
    api: str, fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    chat = await chat_on(fake, server_factory, user_factory, llm_api=api)
    fake.script(say("Four.", reasoning="two plus two makes four"), say("Still four."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "What is 2+2?"})
        frames = await sock.until("assistant_end")
        kinds = [f["type"] for f in frames]
        assert kinds.index("assistant_start") < kinds.index("reasoning_delta") < kinds.index("text_delta")
        reasoning = "".join(f["delta"] for f in frames if f["type"] == "reasoning_delta")
        assert reasoning == "two plus two makes four"
        assert text_of(frames) == "Four."
        await sock.send({"type": "message", "content": "Sure?"})
        await sock.until("assistant_end")
    answer = next(m for m in await chat.history() if m["role"] == "assistant")
    assert (answer["content"], answer["reasoning"]) == ("Four.", "two plus two makes four")
    # The next request carries the answer, and the reasoning never as text: on chat completions not at all, on the
    # Responses API only as the reasoning item the provider gave (what it needs between turns).
    second = fake.requests[-1].body
    items = second["messages"] if api == "chat_completions" else second["input"]
    carrying = [item for item in items if "two plus two makes four" in str(item)]
    assert "Four." in str(items)
    if api == "chat_completions":
        assert carrying == []
    else:
        assert [item["type"] for item in carrying] == ["reasoning"]


async def test_an_answer_without_reasoning_has_null_reasoning(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    chat = await chat_on(fake, server_factory, user_factory)
    fake.script(say("Plain."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "hi"})
        frames = await sock.until("assistant_end")
    assert "reasoning_delta" not in {f["type"] for f in frames}
    assert [m["reasoning"] for m in await chat.history()] == [None, None]


@pytest.mark.parametrize("api", APIS)
async def test_session_settings_reach_the_model_request(
    api: str, fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    chat = await chat_on(fake, server_factory, user_factory, llm_api=api)
    settings = {"temperature": 0.3, "top_p": 0.9, "max_output_tokens": 77, "reasoning_effort": "low"}
    async with api_client(chat) as c:
        answer = await c.patch(f"/sessions/{chat.session_id}", json={"settings": settings})
        assert answer.status_code == 200, answer.text
        assert answer.json()["settings"] == settings
        assert (await c.get(f"/sessions/{chat.session_id}")).json()["settings"] == settings
    fake.script(say("Tuned."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "hi"})
        await sock.until("assistant_end")
    body = fake.requests[-1].body
    assert body["temperature"] == 0.3
    assert body["top_p"] == 0.9
    if api == "responses":
        assert body["max_output_tokens"] == 77
        assert body["reasoning"]["effort"] == "low"
    else:
        assert body.get("max_tokens", body.get("max_completion_tokens")) == 77
        assert body["reasoning_effort"] == "low"


async def test_unset_settings_are_left_out_of_the_request(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    chat = await chat_on(fake, server_factory, user_factory)
    fake.script(say("Default."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "hi"})
        await sock.until("assistant_end")
    body = fake.requests[-1].body
    for key in ("temperature", "top_p", "reasoning_effort"):
        assert key not in body
    # The server's own output cap still applies.
    assert body.get("max_tokens", body.get("max_completion_tokens")) is not None


async def test_settings_merge_key_by_key_and_null_unsets_one(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    chat = await chat_on(fake, server_factory, user_factory)
    async with api_client(chat) as c:
        created = await c.post("/sessions", json={"settings": {"temperature": 1.5, "top_p": 0.5}})
        assert created.status_code == 201, created.text
        session = created.json()
        assert session["settings"] == {
            "temperature": 1.5,
            "top_p": 0.5,
            "max_output_tokens": None,
            "reasoning_effort": None,
        }
        change = {"settings": {"top_p": None, "max_output_tokens": 5}}
        patched = await c.patch(f"/sessions/{session['id']}", json=change)
        assert patched.status_code == 200, patched.text
        assert patched.json()["settings"] == {
            "temperature": 1.5,
            "top_p": None,
            "max_output_tokens": 5,
            "reasoning_effort": None,
        }
        # A new session has every setting null.
        plain = (await c.post("/sessions", json={})).json()
        assert set(plain["settings"].values()) == {None}


@pytest.mark.parametrize(
    "settings",
    [
        {"temperature": 2.5},
        {"temperature": -0.1},
        {"top_p": 1.5},
        {"max_output_tokens": 0},
        {"reasoning_effort": "extreme"},
        {"seed": 3},
        {"temperature": "hot"},
    ],
)
async def test_out_of_range_settings_are_422_and_change_nothing(
    settings: dict[str, Any], fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    chat = await chat_on(fake, server_factory, user_factory)
    async with api_client(chat) as c:
        answer = await c.patch(f"/sessions/{chat.session_id}", json={"settings": settings})
        assert answer.status_code == 422, answer.text
        assert "settings" in answer.text
        created = await c.post("/sessions", json={"settings": settings})
        assert created.status_code == 422, created.text
        assert set((await c.get(f"/sessions/{chat.session_id}")).json()["settings"].values()) == {None}
    async with api_client(chat) as c:
        answer = await c.patch(f"/sessions/{chat.session_id}", json={"settings": None})
        assert answer.status_code == 422, answer.text
