"""`/sessions` over real HTTP: create, list (keyset cursor), get, patch, delete; ownership and bad input."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from chinwag.config import DEFAULT_CONTEXT_WINDOW, DEFAULT_MODEL
from chinwag.db.messages import append_message
from chinwag.llm.catalog import known_context_window
from tests.conftest import ServerFactory, TestUser, UserFactory

SESSION_KEYS = {
    "id",
    "title",
    "model",
    "instructions",
    "mcp_servers",
    "settings",
    "pinned",
    "message_count",
    "usage",
    "context",
    "active_run_id",
    "created_at",
    "updated_at",
}


async def _create(client: httpx.AsyncClient, user: TestUser, **body: Any) -> dict[str, Any]:
    response = await client.post("/sessions", json=body, headers=user.headers)
    assert response.status_code == 201, response.text
    session: dict[str, Any] = response.json()
    return session


async def test_create_with_defaults(client: httpx.AsyncClient, alice: TestUser) -> None:
    session = await _create(client, alice)
    assert set(session) == SESSION_KEYS
    assert session["title"] == ""
    assert session["model"] == DEFAULT_MODEL
    assert session["instructions"] == ""
    assert session["mcp_servers"] is None
    assert session["pinned"] is False
    assert session["message_count"] == 0
    assert session["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert session["context"] == {"tokens": 0, "limit": known_context_window(DEFAULT_MODEL) or DEFAULT_CONTEXT_WINDOW}
    assert session["active_run_id"] is None
    assert session["created_at"].endswith(("Z", "+00:00"))
    fetched = await client.get(f"/sessions/{session['id']}", headers=alice.headers)
    assert fetched.status_code == 200
    assert fetched.json() == session


async def test_create_with_every_field_and_model_windows(
    server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    server = await server_factory(models="small:8000,large", default_model="large")
    user = await user_factory(server)
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=10) as client:
        default = await _create(client, user)
        assert default["model"] == "large"
        assert default["context"]["limit"] == (known_context_window("large") or DEFAULT_CONTEXT_WINDOW)
        session = await _create(
            client, user, title="Plans", model="small", instructions="Answer in French.", mcp_servers=["time"]
        )
        assert (session["title"], session["model"], session["instructions"]) == ("Plans", "small", "Answer in French.")
        assert session["mcp_servers"] == ["time"]
        assert session["context"]["limit"] == 8000
        unknown = await client.post("/sessions", json={"model": "gpt-9"}, headers=user.headers)
        assert unknown.status_code == 400
        assert unknown.json()["code"] == "bad_request"
        assert "gpt-9" in unknown.json()["detail"]


async def test_requires_authentication(client: httpx.AsyncClient, alice: TestUser) -> None:
    session = await _create(client, alice)
    for method, path in [
        ("POST", "/sessions"),
        ("GET", "/sessions"),
        ("GET", f"/sessions/{session['id']}"),
        ("PATCH", f"/sessions/{session['id']}"),
        ("DELETE", f"/sessions/{session['id']}"),
        ("GET", f"/sessions/{session['id']}/messages"),
    ]:
        response = await client.request(method, path, json={} if method in ("POST", "PATCH") else None)
        assert response.status_code == 401, (method, path)
        assert response.json()["code"] == "unauthorized"


async def test_other_users_sessions_are_not_found(client: httpx.AsyncClient, alice: TestUser, bob: TestUser) -> None:
    session = await _create(client, alice, title="Alice's")
    path = f"/sessions/{session['id']}"
    missing = f"/sessions/{uuid.uuid4()}"
    for target in (path, missing, "/sessions/not-a-uuid", "/sessions/12345"):
        for method, body in [("GET", None), ("PATCH", {"title": "mine now"}), ("DELETE", None)]:
            response = await client.request(method, target, json=body, headers=bob.headers)
            assert response.status_code == 404, (method, target, response.text)
            assert response.json() == {"detail": "session not found", "code": "not_found"}
    listed = await client.get("/sessions", headers=bob.headers)
    assert listed.json() == {"items": [], "next_cursor": None}
    still = await client.get(path, headers=alice.headers)
    assert still.status_code == 200
    assert still.json() == session


async def test_list_is_empty_for_a_new_user(client: httpx.AsyncClient, alice: TestUser) -> None:
    response = await client.get("/sessions", headers=alice.headers)
    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}


async def test_list_exactly_one_page_has_no_cursor(client: httpx.AsyncClient, alice: TestUser) -> None:
    for i in range(3):
        await _create(client, alice, title=f"s{i}")
    page = (await client.get("/sessions", params={"limit": 3}, headers=alice.headers)).json()
    assert [s["title"] for s in page["items"]] == ["s2", "s1", "s0"]
    assert page["next_cursor"] is None


async def _all_pages(client: httpx.AsyncClient, user: TestUser, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = await client.get("/sessions", params=params, headers=user.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([s["title"] for s in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def test_list_pages_pinned_first_then_most_recently_active(
    client: httpx.AsyncClient, alice: TestUser, app_pool: asyncpg.Pool
) -> None:
    ids = {}
    for i in range(7):
        ids[i] = (await _create(client, alice, title=f"s{i}"))["id"]
    pinned = await client.patch(f"/sessions/{ids[1]}", json={"pinned": True}, headers=alice.headers)
    assert pinned.json()["pinned"] is True
    # a message makes s3 the most recently active of the unpinned sessions
    await append_message(app_pool, session_id=ids[3], role="user", content="hello again")
    assert await _all_pages(client, alice, 3) == [["s1", "s3", "s6"], ["s5", "s4", "s2"], ["s0"]]
    assert await _all_pages(client, alice, 1) == [[t] for t in ["s1", "s3", "s6", "s5", "s4", "s2", "s0"]]
    assert await _all_pages(client, alice, 100) == [["s1", "s3", "s6", "s5", "s4", "s2", "s0"]]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": -1},
        {"limit": "ten"},
        {"limit": "1.5"},
        {"cursor": "x" * 10_000},
    ],
)
async def test_list_rejects_bad_query(client: httpx.AsyncClient, alice: TestUser, params: dict[str, Any]) -> None:
    response = await client.get("/sessions", params=params, headers=alice.headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize(
    "cursor", ["garbage", "", "eyJhIjoxfQ", "WzEsMl0", "WzIsMCwiYWJjIl0", "W3RydWUsMCwiMDAiXQ", "!!!", "é"]
)
async def test_list_rejects_cursors_it_did_not_make(client: httpx.AsyncClient, alice: TestUser, cursor: str) -> None:
    response = await client.get("/sessions", params={"cursor": cursor}, headers=alice.headers)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "bad_request"


async def test_patch_changes_only_what_is_sent(server_factory: ServerFactory, user_factory: UserFactory) -> None:
    server = await server_factory(models="one,two:2000")
    user = await user_factory(server)
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=10) as client:
        session = await _create(client, user, title="t", instructions="i", mcp_servers=["a", "b"])
        path = f"/sessions/{session['id']}"
        renamed = (await client.patch(path, json={"title": "New"}, headers=user.headers)).json()
        assert renamed["title"] == "New"
        assert (renamed["instructions"], renamed["mcp_servers"], renamed["model"]) == ("i", ["a", "b"], "one")
        assert renamed["updated_at"] > session["updated_at"]
        moved = (await client.patch(path, json={"model": "two", "mcp_servers": None}, headers=user.headers)).json()
        assert (moved["model"], moved["mcp_servers"], moved["title"]) == ("two", None, "New")
        assert moved["context"]["limit"] == 2000
        unchanged = await client.patch(path, json={}, headers=user.headers)
        assert unchanged.status_code == 200
        assert unchanged.json() == moved
        bad_model = await client.patch(path, json={"model": "three"}, headers=user.headers)
        assert bad_model.status_code == 400
        assert (await client.get(path, headers=user.headers)).json()["model"] == "two"


async def test_delete_removes_the_session_and_its_rows(
    client: httpx.AsyncClient, alice: TestUser, app_pool: asyncpg.Pool
) -> None:
    session = await _create(client, alice)
    sid = uuid.UUID(session["id"])
    await append_message(app_pool, session_id=sid, role="user", content="hi")
    await append_message(app_pool, session_id=sid, role="assistant", content="yo")
    await app_pool.execute("INSERT INTO llm_context (session_id, item, tokens) VALUES ($1, '{}', 3)", sid)
    deleted = await client.delete(f"/sessions/{session['id']}", headers=alice.headers)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await client.get(f"/sessions/{session['id']}", headers=alice.headers)).status_code == 404
    assert (await client.get(f"/sessions/{session['id']}/messages", headers=alice.headers)).status_code == 404
    assert await app_pool.fetchval("SELECT count(*) FROM messages WHERE session_id = $1", sid) == 0
    assert await app_pool.fetchval("SELECT count(*) FROM llm_context WHERE session_id = $1", sid) == 0
    assert (await client.delete(f"/sessions/{session['id']}", headers=alice.headers)).status_code == 404


BAD_BODIES: list[Any] = [
    {"title": "x" * 500_000},  # within the body cap (a bigger body is a 413, see test_body_limit)
    {"title": 123},
    {"title": ["a"]},
    {"title": "nul \x00 inside"},
    {"instructions": "y" * 1_000_000},
    {"instructions": False},
    {"model": ""},
    {"model": 7},
    {"mcp_servers": "time"},
    {"mcp_servers": [1, 2]},
    {"mcp_servers": [""]},
    {"mcp_servers": ["s"] * 1000},
    {"unknown_field": 1},
    {"title": "ok", "id": "forged"},
    [],
    "a string",
    None,
    42,
]


async def test_create_rejects_bad_bodies(client: httpx.AsyncClient, alice: TestUser) -> None:
    for body in BAD_BODIES:
        response = await client.post("/sessions", json=body, headers=alice.headers)
        assert response.status_code == 422, (body if len(str(body)) < 200 else "huge", response.text[:300])
        assert response.json()["code"] == "validation_error"
        assert len(response.content) < 10_000  # the huge input is not echoed back
    assert (await client.get("/sessions", headers=alice.headers)).json()["items"] == []


async def test_patch_rejects_bad_bodies(client: httpx.AsyncClient, alice: TestUser) -> None:
    session = await _create(client, alice, title="keep")
    for body in [*BAD_BODIES, {"title": None}, {"pinned": None}, {"pinned": "maybe"}, {"model": None}]:
        response = await client.patch(f"/sessions/{session['id']}", json=body, headers=alice.headers)
        assert response.status_code == 422, (body if len(str(body)) < 200 else "huge", response.text[:300])
        assert len(response.content) < 10_000
    assert (await client.get(f"/sessions/{session['id']}", headers=alice.headers)).json() == session


async def test_malformed_json_is_a_client_error(client: httpx.AsyncClient, alice: TestUser) -> None:
    session = await _create(client, alice)
    headers = {**alice.headers, "Content-Type": "application/json"}
    for raw in [b"{", b"not json", b'{"title": "\\ud800"}', b'{"title": "a\\u0000b"}', b"\xff\xfe", b""]:
        for method, path in [("POST", "/sessions"), ("PATCH", f"/sessions/{session['id']}")]:
            response = await client.request(method, path, content=raw, headers=headers)
            assert response.status_code == 422, (method, raw, response.text)
    assert (await client.get("/sessions", headers=alice.headers)).json()["items"] == [session]


async def test_an_api_key_reaches_the_same_sessions(client: httpx.AsyncClient, alice: TestUser) -> None:
    created = await _create(client, alice, title="by key")
    keyed = await client.post("/auth/api-keys", json={"name": "script"}, headers=alice.headers)
    assert keyed.status_code == 201, keyed.text
    by_key = await client.get(f"/sessions/{created['id']}", headers={"Authorization": f"Bearer {keyed.json()['key']}"})
    assert by_key.status_code == 200
    assert by_key.json()["id"] == created["id"]
