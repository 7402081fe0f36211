"""Streams recorded from a real llama.cpp server, replayed through the whole chat path (see tests/fakes/recorded)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import STOCK_TOO, ServerFactory, UserFactory
from tests.fakes.openai_script import Reply, say
from tests.fakes.openai_server import RECORDED, FakeOpenAI
from tests.mcp.support import fake_stdio
from tests.routes.chat_support import Chat, connect, new_session, text_of


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


def recorded_text(name: str) -> str:
    """The text a recorded body streams, read straight from its events."""
    text = []
    for line in (RECORDED / name).read_text().splitlines():
        if not line.startswith("data: {"):
            continue
        event = json.loads(line.removeprefix("data: "))
        if event.get("type") == "response.output_text.delta":
            text.append(event["delta"])
        for choice in event.get("choices", []):
            text.append(choice.get("delta", {}).get("content") or "")
    return "".join(text)


def recorded_usage(name: str) -> int | None:
    found = re.findall(r'"completion_tokens":(\d+)', (RECORDED / name).read_text())
    return int(found[-1]) if found else None


async def chat_on(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, **settings: object
) -> Chat:
    server = await server_factory(openai_base_url=fake.base_url, models="smollm2:8192", **settings)
    user = await user_factory(server)
    return Chat.on(server, user, await new_session(server, user))


@pytest.mark.parametrize("name", ["chat_text_usage.sse", "chat_text_no_usage.sse"])
async def test_recorded_text_streams_arrive_whole(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, name: str
) -> None:
    chat = await chat_on(fake, server_factory, user_factory)
    fake.script(Reply(recorded=name))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "Say hello in one short sentence."})
        frames = await sock.until("assistant_end")
    end = frames[-1]
    assert end["finish_reason"] == "stop"
    assert text_of(frames) == recorded_text(name)
    usage = recorded_usage(name)
    if usage is not None:
        assert end["usage"]["output_tokens"] == usage
    history = await chat.history()
    assert history[1]["content"] == recorded_text(name)


async def test_a_recorded_length_finish_ends_with_length(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    chat = await chat_on(fake, server_factory, user_factory)
    fake.script(Reply(recorded="chat_length.sse"))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "Count from one to one hundred in words."})
        frames = await sock.until("assistant_end")
    assert frames[-1]["finish_reason"] == "length"
    assert text_of(frames) == recorded_text("chat_length.sse")


@STOCK_TOO
async def test_recorded_tool_call_deltas_make_one_call(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, tmp_path: Path
) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"testtools": fake_stdio(pool_size=1)}}))
    chat = await chat_on(fake, server_factory, user_factory, mcp_config=config)
    fake.script(Reply(recorded="chat_tool_call.sse"), say("The tool said hello."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "Call the echo tool with the text hello."})
        frames = await sock.until("assistant_end")
    starts = [f for f in frames if f["type"] == "tool_start"]
    done = [f for f in frames if f["type"] == "tool_done"]
    assert [(f["name"], json.loads(f["arguments"])) for f in starts] == [("echo", {"text": "hello"})]
    assert [(f["output"], f["ok"]) for f in done] == [("hello", True)]
    assert frames[-1]["finish_reason"] == "stop"
    # The model's next request carries the call and its output.
    messages = fake.requests[1].body["messages"]
    assert any(m.get("tool_calls") for m in messages)
    assert any(m.get("role") == "tool" and "hello" in str(m.get("content")) for m in messages), messages


@STOCK_TOO
async def test_a_recorded_responses_stream_arrives_whole(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    chat = await chat_on(fake, server_factory, user_factory, llm_api="responses")
    fake.script(Reply(recorded="responses_text.sse"), say("Again."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "Say hello in one short sentence."})
        frames = await sock.until("assistant_end")
        await sock.send({"type": "message", "content": "Once more."})
        again = await sock.until("assistant_end")
    assert frames[-1]["finish_reason"] == "stop"
    assert text_of(frames) == recorded_text("responses_text.sse")
    assert again[-1]["finish_reason"] == "stop"
