"""Tool calls over the chat socket, with a real MCP server (the fake one, over stdio) and the fake model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import STOCK_TOO, ServerFactory, UserFactory
from tests.fakes.openai_script import call, say
from tests.fakes.openai_server import FakeOpenAI
from tests.mcp.support import fake_stdio
from tests.routes.chat_support import Chat, connect, new_session, text_of


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


@pytest.fixture
async def chat(fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, tmp_path: Path) -> Chat:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"testtools": fake_stdio(pool_size=1, timeout_s=30)}}))
    server = await server_factory(openai_base_url=fake.base_url, mcp_config=config)
    user = await user_factory(server)
    return Chat.on(server, user, await new_session(server, user))


def tool_pairs_are_complete(messages: list[dict[str, Any]]) -> bool:
    """In a chat-completions request: every assistant tool call has its tool answer."""
    calls = {c["id"] for m in messages if m.get("role") == "assistant" for c in m.get("tool_calls") or []}
    answers = {m["tool_call_id"] for m in messages if m.get("role") == "tool"}
    return calls == answers


@STOCK_TOO
async def test_a_tool_call_is_announced_once_answered_and_kept_in_the_history(chat: Chat, fake: FakeOpenAI) -> None:
    fake.script(call("echo", {"text": "hello tools"}, text="Let me echo that."), say("It said hello tools."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "echo something"})
        frames = await sock.until("assistant_end", timeout=30)
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    starts = [f for f in frames if f["type"] == "tool_start"]
    dones = [f for f in frames if f["type"] == "tool_done"]
    assert len(starts) == 1
    assert len(dones) == 1
    start, done = starts[0], dones[0]
    assert (start["name"], start["server"]) == ("echo", "testtools")
    assert json.loads(start["arguments"]) == {"text": "hello tools"}
    assert (done["call_id"], done["name"], done["output"], done["ok"]) == (
        start["call_id"],
        "echo",
        "hello tools",
        True,
    )
    assert frames.index(start) < frames.index(done)
    assert frames[-1]["finish_reason"] == "stop"

    history = await chat.history()
    assert [m["role"] for m in history] == ["user", "assistant", "tool"]
    # The answer after the tool call starts a new paragraph.
    assert history[1]["content"] == text_of(frames) == "Let me echo that.\n\nIt said hello tools."
    tool = history[2]
    assert tool["tool"] == {
        "call_id": start["call_id"],
        "name": "echo",
        "arguments": start["arguments"],
        "output": "hello tools",
        "ok": True,
    }
    assert tool["content"] == "hello tools"
    # The second model call got the tool's answer.
    assert tool_pairs_are_complete(fake.requests[1].body["messages"])


async def test_a_failing_tool_is_done_with_ok_false_and_the_run_goes_on(chat: Chat, fake: FakeOpenAI) -> None:
    fake.script(call("fail", {"message": "disk on fire"}), say("The tool failed."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "try the tool"})
        frames = await sock.until("assistant_end", timeout=30)
    done = next(f for f in frames if f["type"] == "tool_done")
    assert done["ok"] is False
    assert "disk on fire" in done["output"]
    assert frames[-1]["finish_reason"] == "stop"
    history = await chat.history()
    assert history[2]["tool"]["ok"] is False


async def test_interrupt_mid_tool_closes_the_tool_and_leaves_the_context_valid(chat: Chat, fake: FakeOpenAI) -> None:
    fake.script(call("sleep", {"seconds": 20}, text="Sleeping."), say("Awake again."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "sleep please"})
        frames = await sock.until("tool_start", timeout=30)
        await asyncio.sleep(0.2)
        await sock.send({"type": "interrupt"})
        frames += await sock.until("assistant_end", timeout=15)  # within the tool's 20 s: the interrupt cut it
        start = next(f for f in frames if f["type"] == "tool_start")
        done = next(f for f in frames if f["type"] == "tool_done")
        assert (done["call_id"], done["ok"]) == (start["call_id"], False)
        assert frames[-1]["finish_reason"] == "interrupted"

        history = await chat.history()
        assert [m["role"] for m in history] == ["user", "assistant", "tool"]
        assert history[1]["status"] == "interrupted"
        assert history[1]["content"] == "Sleeping."
        assert history[2]["status"] == "interrupted"
        assert history[2]["tool"]["ok"] is False

        await sock.send({"type": "message", "content": "are you there?"})
        second = await sock.until("assistant_end", timeout=30)
        assert second[-1]["finish_reason"] == "stop"
    messages = fake.requests[1].body["messages"]
    assert tool_pairs_are_complete(messages)
    assert messages[-1]["role"] == "user"


async def test_a_run_past_max_turns_ends_with_max_turns(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, tmp_path: Path
) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"testtools": fake_stdio(pool_size=1)}}))
    server = await server_factory(openai_base_url=fake.base_url, mcp_config=config, max_turns=1)
    user = await user_factory(server)
    chat = Chat.on(server, user, await new_session(server, user))
    fake.script(call("echo", {"text": "again"}), call("echo", {"text": "and again"}))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "loop"})
        frames = await sock.until("assistant_end", timeout=30)
        assert frames[-1]["finish_reason"] == "max_turns"
        assert [f["type"] for f in frames].count("tool_done") == 1
        history = await chat.history()
        assert [m["role"] for m in history] == ["user", "assistant", "tool"]
        await sock.send({"type": "message", "content": "stop looping"})
        again = await sock.until("assistant_end", timeout=30)
    assert again[-1]["finish_reason"] == "max_turns"
    assert len(fake.requests) == 2
    # The second run's model call saw the first run's call with its output.
    assert tool_pairs_are_complete(fake.requests[-1].body["messages"])
    assert any(m.get("role") == "tool" for m in fake.requests[-1].body["messages"])


async def test_a_tool_server_crashing_mid_call_fails_the_call_and_the_next_run_gets_a_fresh_one(
    chat: Chat, fake: FakeOpenAI
) -> None:
    fake.script(
        call("whoami", {}),
        say("Noted."),
        call("crash", {}),
        say("It crashed."),
        call("whoami", {}),
        say("Back."),
    )
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "who are you?"})
        first = await sock.until("assistant_end", timeout=30)
        await sock.send({"type": "message", "content": "crash please"})
        crashed = await sock.until("assistant_end", timeout=30)
        await sock.send({"type": "message", "content": "who are you now?"})
        after = await sock.until("assistant_end", timeout=30)
    pid_before = next(f for f in first if f["type"] == "tool_done")["output"]
    done = next(f for f in crashed if f["type"] == "tool_done")
    assert done["ok"] is False
    assert done["output"]
    assert crashed[-1]["finish_reason"] == "stop", "the run goes on after the tool failed"
    again = next(f for f in after if f["type"] == "tool_done")
    assert again["ok"] is True
    assert again["output"] != pid_before, "a fresh process answered"


async def test_a_tool_server_that_never_starts_leaves_chat_working_and_is_reported(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, tmp_path: Path
) -> None:
    config = tmp_path / "mcp.json"
    servers = {"testtools": fake_stdio(pool_size=1), "broken": {"command": str(tmp_path / "missing"), "pool_size": 1}}
    config.write_text(json.dumps({"mcpServers": servers}))
    server = await server_factory(openai_base_url=fake.base_url, mcp_config=config)
    await server.app.state.mcp.wait_started()
    user = await user_factory(server)
    chat = Chat.on(server, user, await new_session(server, user))
    fake.script(call("echo", {"text": "still here"}), say("Works."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "echo"})
        frames = await sock.until("assistant_end", timeout=30)
    assert frames[-1]["finish_reason"] == "stop"
    assert next(f for f in frames if f["type"] == "tool_done")["output"] == "still here"
    system = fake.requests[0].body["messages"][0]["content"]
    assert "unavailable" in system
    assert "broken" in system
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=60) as http:
        reported = {s["name"]: s["status"] for s in (await http.get("/config")).json()["mcp_servers"]}
    assert reported["testtools"] == "ready"
    assert reported["broken"] in ("failed", "restarting")


async def test_two_users_runs_share_one_stdio_instance_call_by_call(
    chat: Chat, fake: FakeOpenAI, user_factory: UserFactory
) -> None:
    """One process (pool_size 1) serves two users' concurrent runs: B's call runs while A's run is still going."""
    bob = await user_factory(chat.running)
    bobs = Chat.on(chat.running, bob, await new_session(chat.running, bob))
    # A's answer after its tool call streams slowly (about 8 s): A's run is still going when B's starts.
    slow = say("one two three four five six seven eight", delay=1.0)
    fake.script(call("sleep", {"seconds": 0.1}), slow, call("echo", {"text": "bob's turn"}), say("Done."))
    async with connect(chat) as alice_sock, connect(bobs) as bob_sock:
        await alice_sock.send({"type": "message", "content": "take your time"})
        alice_frames = await alice_sock.until("tool_done", timeout=30)
        alice_frames += await alice_sock.until("text_delta", timeout=30)
        await bob_sock.send({"type": "message", "content": "echo for me"})
        bob_frames = await bob_sock.until("assistant_end", timeout=30)
        alice_frames += await alice_sock.until("assistant_end", timeout=30)
    (bob_done,) = [f for f in bob_frames if f["type"] == "tool_done"]
    assert (bob_done["name"], bob_done["ok"], bob_done["output"]) == ("echo", True, "bob's turn")
    (alice_done,) = [f for f in alice_frames if f["type"] == "tool_done"]
    assert (alice_done["name"], alice_done["ok"]) == ("sleep", True)
    assert alice_frames[-1]["finish_reason"] == bob_frames[-1]["finish_reason"] == "stop"
    assert text_of(bob_frames) == "Done."
