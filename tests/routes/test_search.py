"""`GET /search` over real HTTP: the user's own messages only, snippets, bad queries."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx

from chinwag.db.messages import append_message
from tests.conftest import ServerFactory, TestUser, UserFactory


async def _session(client: httpx.AsyncClient, user: TestUser, pool: asyncpg.Pool, *contents: str) -> str:
    response = await client.post("/sessions", json={}, headers=user.headers)
    assert response.status_code == 201
    session_id: str = response.json()["id"]
    for content in contents:
        await append_message(pool, session_id=session_id, role="user", content=content)
    return session_id


async def _search(client: httpx.AsyncClient, user: TestUser, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/search", params=params, headers=user.headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_search_finds_only_own_messages(
    client: httpx.AsyncClient, alice: TestUser, bob: TestUser, app_pool: asyncpg.Pool
) -> None:
    alice_session = await _session(
        client, alice, app_pool, "Let us plan the trip to Lisbon", "nothing here", "Lisbon trams are yellow"
    )
    await _session(client, bob, app_pool, "Bob also goes to Lisbon", "bob's secret word is marmalade")

    hits = await _search(client, alice, q="lisbon")
    assert {(h["session_id"], h["seq"]) for h in hits} == {(alice_session, 1), (alice_session, 3)}
    assert all(set(h) == {"session_id", "message_id", "seq", "snippet"} for h in hits)
    assert all("Lisbon" in h["snippet"] for h in hits)
    assert await _search(client, alice, q="marmalade") == []
    assert [h["seq"] for h in await _search(client, alice, q="yellow trams")] == [3]
    assert len(await _search(client, alice, q="lisbon", limit=1)) == 1

    bob_hits = await _search(client, bob, q="lisbon")
    assert len(bob_hits) == 1
    assert bob_hits[0]["session_id"] != alice_session

    messages = (await client.get(f"/sessions/{alice_session}/messages", headers=alice.headers)).json()["items"]
    assert {h["message_id"] for h in hits} == {messages[0]["id"], messages[2]["id"]}


async def test_deleted_sessions_leave_no_hits(
    client: httpx.AsyncClient, alice: TestUser, app_pool: asyncpg.Pool
) -> None:
    session_id = await _session(client, alice, app_pool, "ephemeral words")
    assert len(await _search(client, alice, q="ephemeral")) == 1
    assert (await client.delete(f"/sessions/{session_id}", headers=alice.headers)).status_code == 204
    assert await _search(client, alice, q="ephemeral") == []


async def test_snippet_is_an_excerpt_of_long_messages(
    client: httpx.AsyncClient, alice: TestUser, app_pool: asyncpg.Pool
) -> None:
    long_text = " ".join(["filler"] * 5000 + ["needle"] + ["filler"] * 5000)
    await _session(client, alice, app_pool, long_text)
    (hit,) = await _search(client, alice, q="needle")
    assert "needle" in hit["snippet"]
    assert len(hit["snippet"]) < 1000


async def test_odd_queries_do_not_break(client: httpx.AsyncClient, alice: TestUser, app_pool: asyncpg.Pool) -> None:
    await _session(client, alice, app_pool, "alpha beta gamma")
    for q in ['"alpha beta"', "alpha or zeta", "-beta alpha", "((", "!!!", "':*", "& | !", "ünïcödé", "a" * 1000]:
        response = await client.get("/search", params={"q": q}, headers=alice.headers)
        assert response.status_code == 200, (q, response.text)
    assert [h["seq"] for h in await _search(client, alice, q='"alpha beta"')] == [1]
    assert await _search(client, alice, q="-beta alpha") == []


async def test_bad_queries_are_422(client: httpx.AsyncClient, alice: TestUser) -> None:
    bad: list[dict[str, Any]] = [
        {},
        {"q": ""},
        {"q": "   "},
        {"q": "\t\n"},
        {"q": "a\x00b"},
        {"q": "x" * 1001},
        {"q": "ok", "limit": 0},
        {"q": "ok", "limit": 101},
        {"q": "ok", "limit": "all"},
    ]
    for params in bad:
        response = await client.get("/search", params=params, headers=alice.headers)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["code"] == "validation_error"


async def test_search_requires_authentication(client: httpx.AsyncClient) -> None:
    response = await client.get("/search", params={"q": "anything"})
    assert response.status_code == 401


async def test_undecodable_queries_are_client_errors(
    client: httpx.AsyncClient, alice: TestUser, app_pool: asyncpg.Pool
) -> None:
    await _session(client, alice, app_pool, "plain words")
    for raw in ("q=%ED%A0%80", "q=%FF%FE", "q=%00", "q=a%00b", "q=plain&limit=%00", "q=%F0%9F%98%80"):
        response = await client.get("/search?" + raw, headers=alice.headers)
        assert response.status_code in (200, 422), (raw, response.text)
    assert [h["seq"] for h in await _search(client, alice, q="plain")] == [1]


async def test_a_search_that_runs_too_long_is_cut_with_503(
    server_factory: ServerFactory, user_factory: UserFactory, db: asyncpg.Connection
) -> None:
    server = await server_factory(search_timeout_s=0.001)  # 1 ms: PostgreSQL's smallest statement timeout
    user = await user_factory(server)
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", headers=user.headers, timeout=60) as client:
        session_id = uuid.UUID((await client.post("/sessions", json={})).json()["id"])
        # Every message matches: ranking 100,000 of them takes far longer than a millisecond.
        await db.execute(
            "INSERT INTO messages (session_id, seq, role, content)"
            " SELECT $1, g, 'user', 'needle in the haystack number ' || g FROM generate_series(1, 100000) AS g",
            session_id,
        )
        answer = await client.get("/search", params={"q": "needle haystack"})
        assert answer.status_code == 503, answer.text
        assert answer.json()["code"] == "unavailable"
        assert "too long" in answer.json()["detail"]
        assert "retry-after" in answer.headers
        assert (await client.get("/sessions")).status_code == 200  # the connection went back to the pool clean


async def test_searches_are_bounded_per_user_and_others_are_not_held_up(
    server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    server = await server_factory(search_concurrency_per_user=2)
    alice, bob = await user_factory(server), await user_factory(server)
    slots = server.app.state.search_slots
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=60) as client:
        # Two of alice's searches are running (held here as the route would hold them).
        async with slots.hold(alice.id, limit=2, detail=""), slots.hold(alice.id, limit=2, detail=""):
            third = await client.get("/search", params={"q": "x"}, headers=alice.headers)
            assert third.status_code == 429
            assert third.json()["code"] == "rate_limited"
            assert "retry-after" in third.headers
            assert (await client.get("/search", params={"q": "x"}, headers=bob.headers)).status_code == 200
        assert (await client.get("/search", params={"q": "x"}, headers=alice.headers)).status_code == 200
