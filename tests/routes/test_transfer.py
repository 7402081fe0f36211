"""Export and import (CONTRACT.md section 4): JSON of every branch and back, Markdown of the active branch, the
OpenAI chat shape, and bad imports answered 422 naming the place."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from chinwag.db.messages import append_message
from chinwag.schemas.messages import ToolCall
from tests.conftest import RunningServer, ServerFactory, TestUser, UserFactory
from tests.fakes.openai_script import say
from tests.fakes.openai_server import FakeOpenAI
from tests.routes.chat_support import Chat, connect, new_session
from tests.routes.test_branches import sent, turn

BRANCH_KEYS = ("seq", "parent_seq", "sibling_seqs", "role", "content", "status", "tool", "finish_reason")


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


@pytest.fixture
async def chat(fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory) -> Chat:
    server = await server_factory(
        openai_base_url=fake.base_url, models="gpt-4.1-mini:1000000", max_import_bytes=2_000_000
    )
    user = await user_factory(server)
    return Chat.on(server, user, await new_session(server, user, title="Trip: Lisbon / Porto"))


def api(chat: Chat) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=chat.base_url + "/api/v1", headers=chat.user.headers, timeout=30)


async def export(chat: Chat, session_id: str | None = None) -> dict[str, Any]:
    async with api(chat) as c:
        answer = await c.get(f"/sessions/{session_id or chat.session_id}/export")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    body: dict[str, Any] = answer.json()
    return body


async def import_(chat: Chat, body: Any) -> httpx.Response:
    async with api(chat) as c:
        if isinstance(body, bytes):
            return await c.post("/sessions/import", content=body, headers={"Content-Type": "application/json"})
        return await c.post("/sessions/import", json=body)


async def test_export_then_import_keeps_every_branch_and_the_active_one(chat: Chat, fake: FakeOpenAI) -> None:
    fake.script(say("Answer one."), say("Answer two."), say("Second answer."), say("Edited answer."), say("Next."))
    async with connect(chat) as sock:
        await turn(sock, {"type": "message", "content": "First?"})
        await turn(sock, {"type": "regenerate"})
        await turn(sock, {"type": "message", "content": "Second?"})
        await turn(sock, {"type": "edit", "seq": 4, "content": "Second, edited?"})
    exported = await export(chat)
    assert exported["format"] == "chinwag.session.v1"
    assert exported["session"]["id"] == chat.session_id
    assert exported["session"]["leaf_seq"] == 7
    assert [m["seq"] for m in exported["messages"]] == [1, 2, 3, 4, 5, 6, 7]
    assert [m["parent_seq"] for m in exported["messages"]] == [None, 1, 1, 3, 4, 3, 6]
    assert exported["files"] == []

    answer = await import_(chat, exported)
    assert answer.status_code == 201, answer.text
    imported = answer.json()
    assert imported["id"] != chat.session_id
    assert (imported["title"], imported["leaf_seq"], imported["message_count"]) == ("Trip: Lisbon / Porto", 7, 7)
    again = await export(chat, imported["id"])
    assert [{k: m[k] for k in BRANCH_KEYS} for m in again["messages"]] == [
        {k: m[k] for k in BRANCH_KEYS} for m in exported["messages"]
    ]
    assert {m["id"] for m in again["messages"]}.isdisjoint({m["id"] for m in exported["messages"]})

    # The active branch was rebuilt into Layer 1: the next run of the imported session sends exactly it.
    copy = Chat(base_url=chat.base_url, user=chat.user, session_id=imported["id"], server=chat.server)
    assert [m["content"] for m in await copy.history()] == [
        "First?",
        "Answer two.",
        "Second, edited?",
        "Edited answer.",
    ]
    async with api(chat) as c:
        context = (await c.get(f"/sessions/{copy.session_id}/context")).json()
    async with connect(copy) as sock:
        await turn(sock, {"type": "message", "content": "Third?"})
    assert sent(fake) == [
        ("user", "First?"),
        ("assistant", "Answer two."),
        ("user", "Second, edited?"),
        ("assistant", "Edited answer."),
        ("user", "Third?"),
    ]
    assert [i["content"] for i in context["items"] if i.get("role") == "user"] == ["First?", "Second, edited?"]


async def test_markdown_export_of_the_active_branch(chat: Chat, app_pool: asyncpg.Pool) -> None:
    sid = chat.session_id
    await append_message(app_pool, session_id=sid, role="user", content="What time is it?")
    await append_message(
        app_pool,
        session_id=sid,
        role="tool",
        content="",
        tool=ToolCall(call_id="c1", name="now", arguments='{"tz": "UTC"}', output="noon ```x```", ok=True),
    )
    await append_message(app_pool, session_id=sid, role="assistant", content="It is **noon**.")
    async with api(chat) as c:
        answer = await c.get(f"/sessions/{sid}/export", params={"format": "markdown"})
        assert (await c.get(f"/sessions/{sid}/export", params={"format": "pdf"})).status_code == 422
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/markdown")
    disposition = answer.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="Trip_ Lisbon _ Porto.md"')
    assert "filename*=UTF-8''Trip%3A%20Lisbon%20%2F%20Porto.md" in disposition
    text = answer.text
    assert text.startswith("# Trip: Lisbon / Porto\n\n## User\n\nWhat time is it?\n\n")
    assert '**Tool call:** `now`\n\n```json\n{"tz": "UTC"}\n```\n\nOutput:\n\n````\nnoon ```x```\n````\n' in text
    assert text.endswith("## Assistant\n\nIt is **noon**.\n\n")


async def test_the_openai_chat_shape_imports_as_one_branch(chat: Chat) -> None:
    answer = await import_(
        chat,
        {
            "title": "From elsewhere",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi", "name": "ann"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Bye"},
            ],
        },
    )
    assert answer.status_code == 201, answer.text
    session = answer.json()
    assert (session["title"], session["instructions"], session["leaf_seq"]) == ("From elsewhere", "Be brief.", 3)
    copy = Chat(base_url=chat.base_url, user=chat.user, session_id=session["id"], server=chat.server)
    history = await copy.history()
    assert [(m["seq"], m["parent_seq"], m["role"], m["content"]) for m in history] == [
        (1, None, "user", "Hi"),
        (2, 1, "assistant", "Hello!"),
        (3, 2, "user", "Bye"),
    ]
    assert session["context"]["tokens"] > 0


def _message(seq: int, parent: int | None, role: str = "user") -> dict[str, Any]:
    return {"seq": seq, "parent_seq": parent, "role": role, "content": f"m{seq}"}


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b"not json", ["body"]),
        (b"[1, 2]", ["body"]),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]},
            ["body", "messages", 1, "role"],
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]},
            ["body", "messages", 0, "content"],
        ),
        ({"messages": [{"role": "user", "content": "a\u0000"}]}, ["body", "messages", 0, "content"]),
        ({"title": "x"}, ["body", "messages"]),
        ({"format": "chinwag.session.v2", "messages": []}, ["body", "format"]),
        (
            {"format": "chinwag.session.v1", "messages": [_message(1, None), _message(3, 1)]},
            ["body", "messages", 1, "seq"],
        ),
        (
            {"format": "chinwag.session.v1", "messages": [_message(1, None), _message(2, 2)]},
            ["body", "messages", 1, "parent_seq"],
        ),
        ({"format": "chinwag.session.v1", "messages": [_message(1, None, "tool")]}, ["body", "messages", 0, "tool"]),
        (
            {"format": "chinwag.session.v1", "session": {"leaf_seq": 5}, "messages": [_message(1, None)]},
            ["body", "session", "leaf_seq"],
        ),
        ({"messages": [{"role": "user", "content": "a"}] * 10_001}, ["body", "messages"]),
    ],
)
async def test_bad_imports_are_422_naming_the_place(chat: Chat, body: Any, loc: list[Any]) -> None:
    answer = await import_(chat, body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == loc
    async with api(chat) as c:
        sessions = (await c.get("/sessions")).json()["items"]
    assert [s["id"] for s in sessions] == [chat.session_id]  # nothing half-written


async def test_an_import_past_its_size_bound_is_413(chat: Chat) -> None:
    big = {"messages": [{"role": "user", "content": "word " * 180_000}] * 3}
    answer = await import_(chat, orjson.dumps(big))
    assert (answer.status_code, answer.json()["code"]) == (413, "too_large")
    # A body larger than CHINWAG_MAX_BODY_BYTES (1 MiB) but within the import bound is taken.
    within = {"messages": [{"role": "user", "content": "word " * 120_000}] * 2}
    assert (await import_(chat, within)).status_code == 201


async def test_a_large_export_streams_every_message_in_order(
    server: RunningServer, alice: TestUser, app_pool: asyncpg.Pool
) -> None:
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", headers=alice.headers, timeout=60) as c:
        session_id = (await c.post("/sessions", json={})).json()["id"]
        sid = uuid.UUID(session_id)
        count = 1_234  # more than two batches
        await app_pool.copy_records_to_table(
            "messages",
            records=[(sid, seq, seq - 1, "user" if seq % 2 else "assistant", f"m{seq}") for seq in range(1, count + 1)],
            columns=["session_id", "seq", "parent_seq", "role", "content"],
        )
        await app_pool.execute("UPDATE sessions SET message_count = $2, leaf_seq = $2 WHERE id = $1", sid, count)
        async with c.stream("GET", f"/sessions/{session_id}/export") as answer:
            assert "content-length" not in answer.headers  # streamed, not built whole first
            body = orjson.loads(await answer.aread())
    assert [m["content"] for m in body["messages"]] == [f"m{seq}" for seq in range(1, count + 1)]
    assert body["messages"][5]["parent_seq"] == 5
