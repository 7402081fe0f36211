"""`GET /sessions/{id}/messages` over real HTTP: keyset pages in both directions, edges, ownership, bad input."""

from __future__ import annotations

import random
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from chinwag.db import branches as branches_db
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
    "parent_seq",
    "sibling_seqs",
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


def _branchy_tree(branches: int, per_branch: int, seed: int = 7) -> dict[int, int | None]:
    """seq -> parent of a session of `branches` chains of `per_branch` messages: the first from the root, each
    other forking from a random message made before it."""
    rng = random.Random(seed)
    parents: dict[int, int | None] = {}
    for branch in range(branches):
        parent = None if branch == 0 else rng.randint(1, len(parents))
        for _ in range(per_branch):
            seq = len(parents) + 1
            parents[seq] = parent
            parent = seq
    return parents


def _path_to(parents: dict[int, int | None], leaf: int) -> list[int]:
    path: list[int] = []
    node: int | None = leaf
    while node is not None:
        path.append(node)
        node = parents[node]
    return path[::-1]


async def _all_pages(client: httpx.AsyncClient, user: TestUser, session_id: str, *, backward: bool) -> list[int]:
    seqs: list[int] = []
    params: dict[str, Any] = {"limit": 100} if backward else {"limit": 100, "after": 0}
    while True:
        page = await _page(client, user, session_id, **params)
        got = _seqs(page)
        assert got == sorted(got)
        seqs = got + seqs if backward else seqs + got
        if not page["has_more"]:
            return seqs
        params = {"limit": 100, "before": got[0]} if backward else {"limit": 100, "after": got[-1]}


async def test_paging_the_active_branch_of_10000_messages_in_50_branches(
    client: httpx.AsyncClient, alice: TestUser, app_pool: asyncpg.Pool
) -> None:
    parents = _branchy_tree(50, 200)
    response = await client.post("/sessions", json={"title": "branches"}, headers=alice.headers)
    session_id = response.json()["id"]
    sid = uuid.UUID(session_id)
    # Loaded with COPY, every message off the branch; then the branch is switched to the newest leaf by the server's
    # own switch, which walks up from it and sets the flags.
    records = [
        (sid, seq, 0 if parent is None else parent, "user" if seq % 2 else "assistant", f"m{seq}", False)
        for seq, parent in parents.items()
    ]
    await app_pool.copy_records_to_table(
        "messages", records=records, columns=["session_id", "seq", "parent_seq", "role", "content", "on_branch"]
    )
    await app_pool.execute("UPDATE sessions SET message_count = $2 WHERE id = $1", sid, len(parents))
    async with app_pool.acquire() as conn, conn.transaction():
        await branches_db.lock_session(conn, session_id=sid)
        await branches_db.set_leaf(conn, session_id=sid, leaf=len(parents))

    expected = _path_to(parents, len(parents))
    assert len(expected) > 200  # the newest branch forks from another: it is deeper than one chain
    assert await _all_pages(client, alice, session_id, backward=True) == expected
    assert await _all_pages(client, alice, session_id, backward=False) == expected

    # Switch to a message of the third branch: the branch through it, down to its newest leaf, pages the same way.
    target = 2 * 200 + 57
    response = await client.post(f"/sessions/{session_id}/branch", json={"seq": target}, headers=alice.headers)
    assert response.status_code == 200, response.text
    below = {seq for seq in parents if target in _path_to(parents, seq)}
    expected = _path_to(parents, max(below))
    assert response.json()["leaf_seq"] == expected[-1]
    assert await _all_pages(client, alice, session_id, backward=True) == expected
    assert await _all_pages(client, alice, session_id, backward=False) == expected
    first = await _page(client, alice, session_id, limit=1, after=0)
    children_of_root = sorted(seq for seq, parent in parents.items() if parent is None and seq % 2 == 1)
    assert first["items"][0]["sibling_seqs"] == children_of_root
