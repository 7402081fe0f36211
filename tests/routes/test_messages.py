"""`GET /sessions/{id}/messages` over real HTTP: keyset pages in both directions, edges, ownership, bad input."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from chinwag.db.messages import append_message
from chinwag.schemas.messages import ToolCall
from chinwag.schemas.sessions import TokenUsage
from tests.conftest import TestUser

MESSAGE_KEYS = {
    "id",
    "seq",
    "role",
    "content",
    "status",
    "tool",
    "run_id",
    "client_id",
    "usage",
    "finish_reason",
    "reasoning",
    "created_at",
}


async def _session_with(client: httpx.AsyncClient, user: TestUser, pool: asyncpg.Pool, count: int) -> str:
    response = await client.post("/sessions", json={"title": "history"}, headers=user.headers)
    assert response.status_code == 201
    session_id: str = response.json()["id"]
    for i in range(1, count + 1):
        await append_message(pool, session_id=session_id, role="user" if i % 2 else "assistant", content=f"message {i}")
    return session_id


async def _page(client: httpx.AsyncClient, user: TestUser, session_id: str, **params: Any) -> dict[str, Any]:
    response = await client.get(f"/sessions/{session_id}/messages", params=params, headers=user.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _seqs(page: dict[str, Any]) -> list[int]:
    return [m["seq"] for m in page["items"]]


async def test_empty_session(client: httpx.AsyncClient, alice: TestUser, app_pool: asyncpg.Pool) -> None:
    session_id = await _session_with(client, alice, app_pool, 0)
    for params in ({}, {"before": 10}, {"after": 0}, {"limit": 1}):
        assert await _page(client, alice, session_id, **params) == {"items": [], "has_more": False}


async def test_exactly_one_page(client: httpx.AsyncClient, alice: TestUser, app_pool: asyncpg.Pool) -> None:
    session_id = await _session_with(client, alice, app_pool, 5)
    newest = await _page(client, alice, session_id, limit=5)
    assert _seqs(newest) == [1, 2, 3, 4, 5]
    assert newest["has_more"] is False
    forward = await _page(client, alice, session_id, limit=5, after=0)
    assert _seqs(forward) == [1, 2, 3, 4, 5]
    assert forward["has_more"] is False
    backward = await _page(client, alice, session_id, limit=5, before=6)
    assert _seqs(backward) == [1, 2, 3, 4, 5]
    assert backward["has_more"] is False
    assert (await _page(client, alice, session_id, limit=4))["has_more"] is True


async def test_pages_are_contiguous_in_both_directions(
    client: httpx.AsyncClient, alice: TestUser, app_pool: asyncpg.Pool
) -> None:
    n = 23
    session_id = await _session_with(client, alice, app_pool, n)

    backward: list[int] = []
    page = await _page(client, alice, session_id, limit=5)
    while True:
        assert _seqs(page) == sorted(_seqs(page))  # oldest first within a page
        backward = _seqs(page) + backward
        if not page["has_more"]:
            break
        page = await _page(client, alice, session_id, limit=5, before=page["items"][0]["seq"])
    assert backward == list(range(1, n + 1))

    forward: list[int] = []
    after = 0
    while True:
        page = await _page(client, alice, session_id, limit=5, after=after)
        forward += _seqs(page)
        if not page["has_more"]:
            break
        after = page["items"][-1]["seq"]
    assert forward == list(range(1, n + 1))

    assert _seqs(await _page(client, alice, session_id, limit=3, before=3)) == [1, 2]
    assert _seqs(await _page(client, alice, session_id, limit=3, after=21)) == [22, 23]
    assert (await _page(client, alice, session_id, limit=3, after=23)) == {"items": [], "has_more": False}
    assert (await _page(client, alice, session_id, limit=3, before=1)) == {"items": [], "has_more": False}
    default = await _page(client, alice, session_id)
    assert _seqs(default) == list(range(1, n + 1))
    assert default["has_more"] is False


async def test_message_shape(client: httpx.AsyncClient, alice: TestUser, app_pool: asyncpg.Pool) -> None:
    session_id = await _session_with(client, alice, app_pool, 1)
    run_id = str(uuid.uuid4())
    await append_message(
        app_pool,
        session_id=session_id,
        role="tool",
        content="",
        tool=ToolCall(call_id="call_1", name="now", arguments="{}", output="noon", ok=True),
        run_id=run_id,
    )
    await append_message(
        app_pool,
        session_id=session_id,
        role="assistant",
        content="It is noon.",
        status="interrupted",
        run_id=run_id,
        usage=TokenUsage(input_tokens=12, output_tokens=3),
    )
    items = (await _page(client, alice, session_id))["items"]
    assert all(set(m) == MESSAGE_KEYS for m in items)
    first, tool, answer = items
    assert (first["role"], first["content"], first["status"], first["tool"], first["usage"]) == (
        "user",
        "message 1",
        "complete",
        None,
        None,
    )
    assert tool["tool"] == {"call_id": "call_1", "name": "now", "arguments": "{}", "output": "noon", "ok": True}
    assert tool["run_id"] == run_id
    assert (answer["status"], answer["usage"]) == ("interrupted", {"input_tokens": 12, "output_tokens": 3})
    session = (await client.get(f"/sessions/{session_id}", headers=alice.headers)).json()
    assert session["message_count"] == 3


async def test_other_users_history_is_not_found(
    client: httpx.AsyncClient, alice: TestUser, bob: TestUser, app_pool: asyncpg.Pool
) -> None:
    session_id = await _session_with(client, alice, app_pool, 3)
    for target in (session_id, str(uuid.uuid4()), "nope", "1"):
        for params in ({}, {"before": 3}, {"after": 0}):
            response = await client.get(f"/sessions/{target}/messages", params=params, headers=bob.headers)
            assert response.status_code == 404, (target, params)
            assert response.json()["code"] == "not_found"
    assert _seqs(await _page(client, alice, session_id)) == [1, 2, 3]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "many"},
        {"before": 2, "after": 1},
        {"before": -1},
        {"after": -5},
        {"before": "x"},
        {"after": 10**12},
        {"before": "1e3"},
    ],
)
async def test_bad_queries_are_422(
    client: httpx.AsyncClient, alice: TestUser, app_pool: asyncpg.Pool, params: dict[str, Any]
) -> None:
    session_id = await _session_with(client, alice, app_pool, 2)
    response = await client.get(f"/sessions/{session_id}/messages", params=params, headers=alice.headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
