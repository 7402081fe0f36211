"""chinwag end to end against a real llama.cpp server, on both APIs: protocol and bookkeeping, never wording."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer, ServerFactory, TestUser, UserFactory
from tests.mcp.support import fake_stdio
from tests.real.conftest import WINDOW, LlamaServer
from tests.routes.chat_support import Chat, connect, new_session, run_frames, text_of

APIS = ["chat_completions", "responses"]


async def chat_on(
    llama: LlamaServer, server_factory: ServerFactory, user_factory: UserFactory, *, api: str, **settings: Any
) -> tuple[RunningServer, TestUser, Chat]:
    settings.setdefault("models", f"{llama.model}:{WINDOW}")
    settings.setdefault("max_output_tokens", 48)
    server = await server_factory(openai_base_url=llama.base_url, llm_api=api, **settings)
    user = await user_factory(server)
    return server, user, Chat.on(server, user, await new_session(server, user))


def ended(frames: list[dict[str, Any]]) -> dict[str, Any]:
    end = frames[-1]
    assert end["type"] == "assistant_end", frames
    assert not [f for f in frames if f["type"] == "error"], frames
    return end


@pytest.mark.parametrize("api", APIS)
async def test_turns_with_history_match_what_was_streamed(
    llama: LlamaServer, server_factory: ServerFactory, user_factory: UserFactory, api: str
) -> None:
    _, _, chat = await chat_on(llama, server_factory, user_factory, api=api)
    streamed: list[str] = []
    async with connect(chat) as sock:
        for question in ("My name is Ada. Say hello.", "What is my name?", "Thank you."):
            await sock.send({"type": "message", "content": question})
            frames = await sock.until("assistant_end", timeout=120)
            end = ended(frames)
            assert end["finish_reason"] in ("stop", "length")
            assert end["usage"]["input_tokens"] > 0
            assert end["usage"]["output_tokens"] > 0
            assert 0 < end["context"]["tokens"] < WINDOW
            streamed.append(text_of(frames))
    history = await chat.history()
    assert [m["role"] for m in history] == ["user", "assistant"] * 3
    assert [m["content"] for m in history if m["role"] == "assistant"] == streamed


@pytest.mark.parametrize("api", APIS)
async def test_an_interrupt_then_the_next_turns_work(
    llama: LlamaServer, server_factory: ServerFactory, user_factory: UserFactory, api: str
) -> None:
    """The Responses API used to refuse every turn after an interrupt (the partial answer had no item type)."""
    _, _, chat = await chat_on(llama, server_factory, user_factory, api=api, max_output_tokens=400)
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "Write a long story about a lighthouse keeper."})
        deltas = 0
        while deltas < 5:
            frame = await sock.recv(timeout=120)
            deltas += frame["type"] == "text_delta"
        await sock.send({"type": "interrupt"})
        first = await sock.until("assistant_end", timeout=30)
        assert first[-1]["finish_reason"] == "interrupted"
        assert first[-1]["usage"]["output_tokens"] > 0
        for question in ("Say one word.", "Say another word."):
            await sock.send({"type": "message", "content": question, "client_id": question})
            frames = await sock.until("assistant_end", timeout=120)
            assert ended(frames)["finish_reason"] in ("stop", "length")
    history = await chat.history()
    assert history[1]["status"] == "interrupted"
    assert history[1]["content"]


@pytest.mark.parametrize("api", APIS)
async def test_a_long_answer_stops_at_the_cap_as_length(
    llama: LlamaServer, server_factory: ServerFactory, user_factory: UserFactory, api: str
) -> None:
    """An answer ends with `length` exactly when it reached the cap. The model sometimes answers in a few words, so
    ask up to six times for one that is cut."""
    server, user, chat = await chat_on(llama, server_factory, user_factory, api=api, max_output_tokens=12)
    cut: list[dict[str, Any]] = []
    for attempt in range(6):  # each in a new session: a short answer in the history begets short answers
        if attempt:
            chat = Chat.on(server, user, await new_session(server, user))
        async with connect(chat) as sock:
            await sock.send({"type": "message", "content": "Count from one to one hundred, in words."})
            frames = await sock.until("assistant_end", timeout=120)
            end = ended(frames)
            assert (end["finish_reason"] == "length") == (end["usage"]["output_tokens"] >= 12), end
            if end["finish_reason"] == "length":
                cut = frames
                await sock.send({"type": "message", "content": "Go on."})
                assert ended(await sock.until("assistant_end", timeout=120))["finish_reason"] in ("stop", "length")
                break
    assert cut, "six answers, none reached the cap"
    history = await chat.history()
    answer = next(m for m in history if m["id"] == cut[-1]["message_id"])
    assert answer["finish_reason"] == "length"
    assert answer["status"] == "complete"
    assert answer["content"] == text_of(cut)


@pytest.mark.parametrize("api", APIS)
async def test_mcp_tool_schemas_count_as_overhead_not_history(
    llama: LlamaServer,
    server_factory: ServerFactory,
    user_factory: UserFactory,
    api: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With tools, the first turn's usage is mostly tool schemas: they must not be folded into the stored history."""
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"testtools": fake_stdio(pool_size=1)}}))
    _, _, chat = await chat_on(llama, server_factory, user_factory, api=api, mcp_config=config)
    caplog.set_level(logging.WARNING, logger="chinwag")
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "Hi."})
        first = ended(await sock.until("assistant_end", timeout=120))
        await sock.send({"type": "message", "content": "Hello again."})
        second = ended(await sock.until("assistant_end", timeout=120))
    assert not [r for r in caplog.records if "not calibrated" in r.getMessage()]
    # The history after two short exchanges is far smaller than one request with the tool schemas.
    assert second["context"]["tokens"] < first["usage"]["input_tokens"]
    history_tokens = first["context"]["tokens"]
    overhead = first["usage"]["input_tokens"] - history_tokens
    assert overhead > history_tokens


@pytest.mark.parametrize("api", APIS)
async def test_a_tiny_window_summarizes_and_keeps_going(
    llama: LlamaServer, server_factory: ServerFactory, user_factory: UserFactory, api: str
) -> None:
    _, user, chat = await chat_on(
        llama, server_factory, user_factory, api=api, models=f"{llama.model}:400", max_output_tokens=60
    )
    context: dict[str, Any] = {}
    async with (
        connect(chat) as sock,
        httpx.AsyncClient(base_url=chat.running.url + "/api/v1", headers=user.headers, timeout=30) as c,
    ):
        for n in range(12):  # answers vary in length: go on until the history passes the threshold
            await sock.send({"type": "message", "content": f"Tell me a fact about the number {n + 1}."})
            end = ended(await sock.until("assistant_end", timeout=180))
            assert end["context"]["tokens"] <= 400
            context = (await c.get(f"/sessions/{chat.session_id}/context")).json()
            if context["summary"]:
                break
    assert context["summary"], context
    assert context["summarized_through_seq"] is not None


@pytest.mark.parametrize("api", APIS)
async def test_the_first_exchange_gives_a_short_title(
    llama: LlamaServer, server_factory: ServerFactory, user_factory: UserFactory, api: str
) -> None:
    server, user, _ = await chat_on(llama, server_factory, user_factory, api=api)
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", headers=user.headers, timeout=30) as c:
        session_id = (await c.post("/sessions", json={})).json()["id"]
        chat = Chat.on(server, user, session_id)
        async with connect(chat) as sock:
            await sock.send({"type": "message", "content": "How do lighthouses work?"})
            await sock.until("session_updated", timeout=120)
        title = (await c.get(f"/sessions/{session_id}")).json()["title"]
    assert title
    assert len(title.removesuffix("…").split()) <= 8
    assert "\n" not in title


@pytest.mark.parametrize("api", APIS)
async def test_a_file_reaches_the_model(
    llama: LlamaServer, server_factory: ServerFactory, user_factory: UserFactory, api: str
) -> None:
    """A file's text goes into the request: the provider counts its tokens in the input."""
    server, user, chat = await chat_on(llama, server_factory, user_factory, api=api)
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "Say hi."})
        bare = ended(await sock.until("assistant_end", timeout=120))["usage"]["input_tokens"]
    text = "The secret code of the lighthouse is amber falcon seven. " * 20
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", headers=user.headers, timeout=30) as c:
        uploaded = await c.post(
            f"/sessions/{chat.session_id}/files", files={"file": ("notes.txt", text.encode(), "text/plain")}
        )
        assert uploaded.status_code == 201, uploaded.text
        file_id = uploaded.json()["id"]
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "What is the code?", "file_ids": [file_id]})
        with_file = ended(await sock.until("assistant_end", timeout=120))["usage"]["input_tokens"]
    assert with_file - bare > 150


@pytest.mark.parametrize("api", APIS)
async def test_resume_mid_answer_gives_every_event_once(
    llama: LlamaServer, server_factory: ServerFactory, user_factory: UserFactory, api: str
) -> None:
    _, _, chat = await chat_on(llama, server_factory, user_factory, api=api, max_output_tokens=80)
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "Describe the sea in a few sentences."})
        seen: list[dict[str, Any]] = []
        while sum(f["type"] == "text_delta" for f in seen) < 3:
            seen.append(await sock.recv(timeout=120))
    run_id = seen[-1]["run_id"]
    async with connect(chat) as sock:
        await sock.send({"type": "resume", "run_id": run_id, "after_seq": seen[-1]["seq"]})
        rest = await sock.until("assistant_end", timeout=120)
    frames = run_frames(seen + rest, run_id)
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    history = await chat.history()
    assert history[1]["content"] == text_of(frames)
