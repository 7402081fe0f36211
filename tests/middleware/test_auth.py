"""AuthMiddleware over real HTTP and WebSocket: which tokens make a user, and which are refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from fastapi import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chinwag.config import Settings
from chinwag.main import create_app
from chinwag.middleware.auth import auth_error_from_scope, user_from_scope
from tests.conftest import RunningServer, TestUser, UserFactory, serve

SECRET = "test-secret-" + "x" * 40  # what settings_factory gives every test server


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], claims: dict[str, Any], key: bytes | None, digest: Any = hashlib.sha256) -> str:
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    signature = b64(hmac.new(key, signing_input.encode(), digest).digest()) if key else ""
    return signing_input + "." + signature


def claims_for(user_id: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "typ": "access", "iat": now, "exp": now + 600}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


async def me(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})


async def test_a_token_made_like_the_server_makes_them_is_accepted(client: httpx.AsyncClient, alice: TestUser) -> None:
    token = jwt.encode(claims_for(alice.id), SECRET, algorithm="HS256")
    response = await me(client, token)
    assert response.status_code == 200
    assert response.json()["id"] == alice.id


def _bad_tokens(alice_id: str, bob_id: str) -> dict[str, str]:
    good = jwt.encode(claims_for(alice_id), SECRET, algorithm="HS256")
    head, payload, signature = good.split(".")
    swapped = b64(json.dumps(claims_for(bob_id)).encode())
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    return {
        "payload tampered": f"{head}.{swapped}.{signature}",
        "signature tampered": f"{head}.{payload}.{flipped}",
        "signature dropped": f"{head}.{payload}.",
        "alg none": hand_made({"alg": "none", "typ": "JWT"}, claims_for(alice_id), None),
        "alg None": hand_made({"alg": "None", "typ": "JWT"}, claims_for(alice_id), None),
        "HS512 with the secret": hand_made(
            {"alg": "HS512", "typ": "JWT"}, claims_for(alice_id), SECRET.encode(), hashlib.sha512
        ),
        "HS384 with the secret": hand_made(
            {"alg": "HS384", "typ": "JWT"}, claims_for(alice_id), SECRET.encode(), hashlib.sha384
        ),
        "RS256 header, HMAC body": hand_made({"alg": "RS256", "typ": "JWT"}, claims_for(alice_id), SECRET.encode()),
        "ES256 header, HMAC body": hand_made({"alg": "ES256", "typ": "JWT"}, claims_for(alice_id), SECRET.encode()),
        "another secret": jwt.encode(claims_for(alice_id), "another-secret-" + "y" * 40, algorithm="HS256"),
        "expired": jwt.encode(
            claims_for(alice_id, iat=int(time.time()) - 3600, exp=int(time.time()) - 10), SECRET, algorithm="HS256"
        ),
        "no exp": jwt.encode(claims_for(alice_id, exp=None), SECRET, algorithm="HS256"),
        "no sub": jwt.encode(claims_for(alice_id, sub=None), SECRET, algorithm="HS256"),
        "not an access token": jwt.encode(claims_for(alice_id, typ="refresh"), SECRET, algorithm="HS256"),
        "sub not a uuid": jwt.encode(claims_for("alice"), SECRET, algorithm="HS256"),
        "sub a number": jwt.encode(claims_for(alice_id, sub=12), SECRET, algorithm="HS256"),
        "unknown user": jwt.encode(claims_for(str(uuid.uuid4())), SECRET, algorithm="HS256"),
        "garbage": "definitely.not.a-jwt",
        "three dots": "...",
        "huge": "a" * 10_000,
        "unicode": "tökén-ünïcode",
    }


async def test_bad_tokens_are_refused(client: httpx.AsyncClient, alice: TestUser, bob: TestUser) -> None:
    for name, token in _bad_tokens(alice.id, bob.id).items():
        response = await client.get("/auth/me", headers={b"Authorization": f"Bearer {token}".encode()})
        assert response.status_code == 401, (name, response.text)
        assert response.json()["code"] == "invalid_token", name


async def test_expired_token_says_so(client: httpx.AsyncClient, alice: TestUser) -> None:
    token = jwt.encode(claims_for(alice.id, exp=int(time.time()) - 1), SECRET, algorithm="HS256")
    response = await me(client, token)
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


async def test_a_deleted_users_token_stops_working(
    client: httpx.AsyncClient, alice: TestUser, db: asyncpg.Connection
) -> None:
    assert (await me(client, alice.access_token)).status_code == 200
    await db.execute("DELETE FROM users WHERE id = $1", uuid.UUID(alice.id))
    assert (await me(client, alice.access_token)).status_code == 401


@pytest.mark.parametrize("header", ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Token abc", "bearer-without-space"])
async def test_malformed_authorization_headers(client: httpx.AsyncClient, header: str) -> None:
    response = await client.get("/auth/me", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["code"] in ("invalid_token", "unauthorized")


async def test_scheme_is_case_insensitive(client: httpx.AsyncClient, alice: TestUser) -> None:
    response = await client.get("/auth/me", headers={"Authorization": f"bearer {alice.access_token}"})
    assert response.status_code == 200


async def test_query_token_is_for_websockets_only(client: httpx.AsyncClient, alice: TestUser) -> None:
    response = await client.get("/auth/me", params={"token": alice.access_token})
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


async def test_a_bad_token_does_not_block_open_routes(root_client: httpx.AsyncClient) -> None:
    response = await root_client.get("/health/live", headers={"Authorization": "Bearer nonsense"})
    assert response.status_code == 200


async def test_database_down_answers_503_not_500(server: RunningServer, alice: TestUser) -> None:
    await server.app.state.pool.close()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        response = await client.get("/api/v1/auth/me", headers=alice.headers)
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"


# --- WebSocket: ?token= or the header; the route decides what to do without a user ---


async def _whoami(websocket: WebSocket) -> None:
    await websocket.accept()
    user = user_from_scope(websocket.scope)
    if user is None:
        await websocket.close(4401, (auth_error_from_scope(websocket.scope) or "unauthorized")[:100])
        return
    await websocket.send_json({"id": user.id})
    await websocket.close()


@pytest.fixture
async def ws_server(db: asyncpg.Connection, settings_factory: Callable[..., Settings]) -> AsyncIterator[RunningServer]:
    app = create_app(settings_factory())
    app.add_api_websocket_route("/ws/whoami", _whoami)
    async with serve(app) as running:
        yield running


async def test_websocket_query_token(ws_server: RunningServer, user_factory: UserFactory) -> None:
    carol = await user_factory(ws_server)
    async with connect(f"{ws_server.ws_url}/ws/whoami?token={carol.access_token}") as ws:
        assert json.loads(await ws.recv()) == {"id": carol.id}


async def test_websocket_header_token_and_api_key(ws_server: RunningServer, user_factory: UserFactory) -> None:
    carol = await user_factory(ws_server)
    async with connect(f"{ws_server.ws_url}/ws/whoami", additional_headers=carol.headers) as ws:
        assert json.loads(await ws.recv()) == {"id": carol.id}
    async with httpx.AsyncClient(base_url=ws_server.url + "/api/v1", timeout=60) as client:
        key = (await client.post("/auth/api-keys", json={"name": "ws"}, headers=carol.headers)).json()["key"]
    async with connect(f"{ws_server.ws_url}/ws/whoami?token={key}") as ws:
        assert json.loads(await ws.recv()) == {"id": carol.id}


@pytest.mark.parametrize("query", ["", "?token=", "?token=nonsense", "?token=cw_unknown"])
async def test_websocket_without_a_good_token_gets_4401(ws_server: RunningServer, query: str) -> None:
    async with connect(f"{ws_server.ws_url}/ws/whoami{query}") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401


@pytest.mark.parametrize("padded", ["{t}%20", "%20{t}", "{t}%09", "{t}+", "{t}%00", "{t}&token={t}", "{t}%0A"])
async def test_websocket_token_is_the_exact_string_or_nothing(
    ws_server: RunningServer, user_factory: UserFactory, padded: str
) -> None:
    carol = await user_factory(ws_server)
    query = "?token=" + padded.format(t=carol.access_token)
    async with connect(f"{ws_server.ws_url}/ws/whoami{query}") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401


@pytest.mark.parametrize("header", ["Bearer  {t}", "Bearer {t} x", "Bearer {t}\tx", "Bearer \t{t}", "Bearer {t},{t}"])
async def test_bearer_token_is_the_exact_string_or_nothing(
    client: httpx.AsyncClient, alice: TestUser, header: str
) -> None:
    response = await client.get("/auth/me", headers={"Authorization": header.format(t=alice.access_token)})
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"
