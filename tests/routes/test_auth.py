"""The auth API over real HTTP: registration, login, refresh rotation, logout, API keys, rate limits, bad input."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import TEST_PASSWORD, RunningServer, ServerFactory, TestUser, UserFactory

PASSWORD = "s3cret-password"


def api(server: RunningServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=30)


async def register(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/auth/register", json={"email": email, "password": password})


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/auth/login", json={"email": email, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- register and login ---


async def test_register_then_login(client: httpx.AsyncClient) -> None:
    registered = await client.post(
        "/auth/register", json={"email": "  Carol@Example.COM ", "password": PASSWORD, "display_name": " Carol  C "}
    )
    assert registered.status_code == 201, registered.text
    user = registered.json()
    assert user["email"] == "carol@example.com"
    assert user["display_name"] == "Carol C"
    assert user["role"] == "user"
    assert set(user) == {"id", "email", "display_name", "role", "created_at"}
    assert user["created_at"].endswith(("Z", "+00:00"))

    response = await login(client, "CAROL@example.com")
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert set(tokens) == {"access_token", "refresh_token", "token_type", "expires_in", "user"}
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 15 * 60
    assert tokens["user"] == user

    me = await client.get("/auth/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    assert me.json() == user


async def test_display_name_defaults_to_the_local_part(client: httpx.AsyncClient) -> None:
    response = await register(client, "dave.smith@example.org")
    assert response.json()["display_name"] == "dave.smith"


async def test_email_is_unique_whatever_its_case(client: httpx.AsyncClient) -> None:
    assert (await register(client, "erin@example.com")).status_code == 201
    again = await register(client, "ERIN@Example.com")
    assert again.status_code == 409
    assert again.json()["code"] == "conflict"


async def test_wrong_password_and_unknown_email_get_the_same_answer(client: httpx.AsyncClient) -> None:
    await register(client, "frank@example.com")
    wrong = await login(client, "frank@example.com", "not-the-password")
    unknown = await login(client, "nobody@example.com", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "Wrong email or password.", "code": "invalid_credentials"}


async def test_user_factory_and_pair(alice: TestUser, bob: TestUser, client: httpx.AsyncClient) -> None:
    assert alice.id != bob.id
    me = await client.get("/auth/me", headers=alice.headers)
    assert me.json()["email"] == "alice@example.com"
    assert (await login(client, bob.email, TEST_PASSWORD)).status_code == 200


async def test_user_factory_admin(server: RunningServer, user_factory: UserFactory, client: httpx.AsyncClient) -> None:
    admin = await user_factory(server, admin=True)
    me = await client.get("/auth/me", headers=admin.headers)
    assert me.json()["role"] == "admin"


# --- registration modes ---


async def test_closed_registration_refuses(server_factory: ServerFactory) -> None:
    server = await server_factory(registration="closed")
    async with api(server) as client:
        response = await register(client, "gina@example.com")
    assert response.status_code == 403
    assert response.json()["code"] == "registration_closed"


async def test_first_user_becomes_admin_then_registration_closes(server_factory: ServerFactory) -> None:
    server = await server_factory(registration="first_user")
    async with api(server) as client:
        first = await register(client, "root@example.com")
        second = await register(client, "late@example.com")
    assert first.status_code == 201
    assert first.json()["role"] == "admin"
    assert second.status_code == 403
    assert second.json()["code"] == "registration_closed"


async def test_first_user_race_has_one_winner(server_factory: ServerFactory, db: asyncpg.Connection) -> None:
    server = await server_factory(registration="first_user")
    async with api(server) as client:
        answers = await asyncio.gather(*(register(client, f"racer{i}@example.com") for i in range(6)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201, 403, 403, 403, 403, 403]
    assert await db.fetchval("SELECT count(*) FROM users") == 1
    assert await db.fetchval("SELECT role FROM users") == "admin"


async def test_open_registration_makes_plain_users(client: httpx.AsyncClient) -> None:
    first = await register(client, "one@example.com")
    second = await register(client, "two@example.com")
    assert first.json()["role"] == second.json()["role"] == "user"


# --- refresh and logout ---


async def test_refresh_rotates(client: httpx.AsyncClient, alice: TestUser) -> None:
    response = await client.post("/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["refresh_token"] != alice.refresh_token
    assert tokens["user"]["id"] == alice.id
    assert (await client.get("/auth/me", headers=bearer(tokens["access_token"]))).status_code == 200

    again = await client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert again.status_code == 200


async def test_reused_refresh_token_revokes_the_family(client: httpx.AsyncClient, alice: TestUser) -> None:
    first = (await client.post("/auth/refresh", json={"refresh_token": alice.refresh_token})).json()
    second = (await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})).json()

    # Someone replays the first, long-used token: refused, and everything descended from it dies.
    replay = await client.post("/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert replay.status_code == 401
    assert replay.json()["code"] == "invalid_token"
    latest = await client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert latest.status_code == 401

    # Another sign-in of the same user is a different family and keeps working.
    other = (await login(client, alice.email, TEST_PASSWORD)).json()
    assert (await client.post("/auth/refresh", json={"refresh_token": other["refresh_token"]})).status_code == 200


async def test_concurrent_use_of_one_refresh_token_leaves_no_live_token(
    client: httpx.AsyncClient, alice: TestUser
) -> None:
    answers = await asyncio.gather(
        *(client.post("/auth/refresh", json={"refresh_token": alice.refresh_token}) for _ in range(4))
    )
    winners = [a.json() for a in answers if a.status_code == 200]
    assert len(winners) == 1
    assert sorted(a.status_code for a in answers) == [200, 401, 401, 401]
    # The losers presented a used token: the whole family, the winner's new token included, is revoked.
    response = await client.post("/auth/refresh", json={"refresh_token": winners[0]["refresh_token"]})
    assert response.status_code == 401


async def test_expired_refresh_token_is_refused(
    client: httpx.AsyncClient, alice: TestUser, db: asyncpg.Connection
) -> None:
    await db.execute("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'")
    response = await client.post("/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


async def test_unknown_refresh_token_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/auth/refresh", json={"refresh_token": "cwr_made-up"})
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


async def test_logout_revokes_and_is_idempotent(client: httpx.AsyncClient, alice: TestUser) -> None:
    response = await client.post("/auth/logout", json={"refresh_token": alice.refresh_token})
    assert response.status_code == 204
    assert response.content == b""
    assert (await client.post("/auth/refresh", json={"refresh_token": alice.refresh_token})).status_code == 401
    assert (await client.post("/auth/logout", json={"refresh_token": alice.refresh_token})).status_code == 204
    assert (await client.post("/auth/logout", json={"refresh_token": "never-issued"})).status_code == 204


async def test_logout_after_rotation_ends_the_sign_in(client: httpx.AsyncClient, alice: TestUser) -> None:
    rotated = (await client.post("/auth/refresh", json={"refresh_token": alice.refresh_token})).json()
    assert (await client.post("/auth/logout", json={"refresh_token": rotated["refresh_token"]})).status_code == 204
    assert (await client.post("/auth/refresh", json={"refresh_token": rotated["refresh_token"]})).status_code == 401


# --- me ---


async def test_me_needs_a_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/auth/me")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_me_with_a_bad_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/auth/me", headers=bearer("not-a-token"))
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


# --- API keys ---


async def test_api_key_lifecycle(client: httpx.AsyncClient, alice: TestUser) -> None:
    created = await client.post("/auth/api-keys", json={"name": "laptop script"}, headers=alice.headers)
    assert created.status_code == 201, created.text
    key = created.json()
    assert set(key) == {"id", "name", "key", "created_at"}
    assert key["key"].startswith("cw_")
    assert key["name"] == "laptop script"

    me = await client.get("/auth/me", headers=bearer(key["key"]))
    assert me.status_code == 200
    assert me.json()["id"] == alice.id

    listed = await client.get("/auth/api-keys", headers=alice.headers)
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert [i["id"] for i in items] == [key["id"]]
    assert "key" not in items[0]
    assert key["key"] not in listed.text
    assert items[0]["last_used_at"] is not None  # it was just used

    deleted = await client.delete(f"/auth/api-keys/{key['id']}", headers=alice.headers)
    assert deleted.status_code == 204
    dead = await client.get("/auth/me", headers=bearer(key["key"]))
    assert dead.status_code == 401
    assert dead.json()["code"] == "invalid_token"
    assert (await client.get("/auth/api-keys", headers=alice.headers)).json() == {"items": []}
    again = await client.delete(f"/auth/api-keys/{key['id']}", headers=alice.headers)
    assert again.status_code == 404


async def test_api_key_can_manage_keys(client: httpx.AsyncClient, alice: TestUser) -> None:
    key = (await client.post("/auth/api-keys", json={"name": "k"}, headers=alice.headers)).json()
    other = await client.post("/auth/api-keys", json={"name": "k2"}, headers=bearer(key["key"]))
    assert other.status_code == 201
    listed = (await client.get("/auth/api-keys", headers=bearer(key["key"]))).json()["items"]
    assert [i["name"] for i in listed] == ["k", "k2"]


async def test_other_users_keys_are_not_found(client: httpx.AsyncClient, alice: TestUser, bob: TestUser) -> None:
    key = (await client.post("/auth/api-keys", json={"name": "alice's"}, headers=alice.headers)).json()
    assert (await client.get("/auth/api-keys", headers=bob.headers)).json() == {"items": []}
    response = await client.delete(f"/auth/api-keys/{key['id']}", headers=bob.headers)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert (await client.get("/auth/me", headers=bearer(key["key"]))).status_code == 200


@pytest.mark.parametrize("key_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000", "x" * 300])
async def test_deleting_an_unknown_key_is_404(client: httpx.AsyncClient, alice: TestUser, key_id: str) -> None:
    response = await client.delete(f"/auth/api-keys/{key_id}", headers=alice.headers)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_api_keys_need_a_user(client: httpx.AsyncClient) -> None:
    assert (await client.get("/auth/api-keys")).status_code == 401
    assert (await client.post("/auth/api-keys", json={"name": "x"})).status_code == 401
    assert (await client.delete("/auth/api-keys/whatever")).status_code == 401


async def test_made_up_api_key_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.get("/auth/me", headers=bearer("cw_made-up-key"))
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


# --- rate limits ---


async def test_failed_logins_hold_back_their_own_address(server_factory: ServerFactory) -> None:
    server = await server_factory(login_attempts_per_minute=3)
    async with api(server) as client:
        await register(client, "henry@example.com")
        for _ in range(3):
            assert (await login(client, "henry@example.com", "wrong-password")).status_code == 401
        limited = await login(client, "henry@example.com")  # this address failed 3 times: it waits
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60


async def test_login_is_rate_limited_per_address(server_factory: ServerFactory) -> None:
    server = await server_factory(login_attempts_per_minute=3)
    async with api(server) as client:
        for i in range(3):
            assert (await login(client, f"guess{i}@example.com", "wrong-password")).status_code == 401
        limited = await login(client, "another@example.com", "wrong-password")
    assert limited.status_code == 429
    assert "retry-after" in limited.headers


async def test_successful_logins_do_not_use_up_the_limit(server_factory: ServerFactory) -> None:
    server = await server_factory(login_attempts_per_minute=2)
    async with api(server) as client:
        await register(client, "ivy@example.com")
        for _ in range(5):
            assert (await login(client, "ivy@example.com")).status_code == 200


async def test_a_burst_cannot_exceed_the_limit(server_factory: ServerFactory) -> None:
    server = await server_factory(login_attempts_per_minute=3)
    async with api(server) as client:
        answers = await asyncio.gather(*(login(client, "jack@example.com", "wrong-password") for _ in range(8)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [401, 401, 401, 429, 429, 429, 429, 429]


# --- bad input: 4xx with a JSON body, never a 500 ---

HUGE = "x" * 100_000
BAD_BODIES: dict[str, list[Any]] = {
    "/auth/register": [
        {},
        {"email": "a@example.com"},
        {"password": PASSWORD},
        {"email": 123, "password": PASSWORD},
        {"email": "a@example.com", "password": 12345678},
        {"email": "a@example.com", "password": ["x" * 10]},
        {"email": None, "password": PASSWORD},
        {"email": "a@example.com", "password": "short"},
        {"email": "a@example.com", "password": HUGE},
        {"email": HUGE + "@example.com", "password": PASSWORD},
        {"email": "not-an-email", "password": PASSWORD},
        {"email": "a@b", "password": PASSWORD},
        {"email": "a b@example.com", "password": PASSWORD},
        {"email": "a\u0000@example.com", "password": PASSWORD},
        {"email": "a@example.com", "password": PASSWORD + "\u0000"},
        {"email": "a@example.com", "password": PASSWORD, "display_name": "   "},
        {"email": "a@example.com", "password": PASSWORD, "display_name": HUGE},
        {"email": "a@example.com", "password": PASSWORD, "display_name": "bad\u0000name"},
        {"email": "a@example.com", "password": PASSWORD, "display_name": 7},
        {"email": "a@example.com", "password": PASSWORD, "role": "admin"},
        [],
        "a string",
        42,
    ],
    "/auth/login": [
        {},
        {"email": "a@example.com"},
        {"email": 1, "password": PASSWORD},
        {"email": "a@example.com", "password": {"$ne": ""}},
        {"email": "a@example.com", "password": HUGE},
        {"email": HUGE, "password": PASSWORD},
        {"email": "a\u0000@example.com", "password": PASSWORD},
        {"email": "a@example.com", "password": PASSWORD, "remember": True},
        [],
        None,
    ],
    "/auth/refresh": [{}, {"refresh_token": 1}, {"refresh_token": ""}, {"refresh_token": HUGE}, {"x": "y"}, []],
    "/auth/logout": [{}, {"refresh_token": None}, {"refresh_token": HUGE}, {"refresh_token": "a", "b": "c"}, "x"],
    "/auth/api-keys": [{}, {"name": ""}, {"name": "  "}, {"name": HUGE}, {"name": 5}, {"name": "k", "key": "cw_x"}],
}
MALFORMED = [
    b"{not json",
    b"",
    b'{"email": "a@example.com", "password": "\\ud800\\udc00\\ud800-lonely", "name": "\\ud800", '
    b'"refresh_token": "\\udfff"}',
    b"\xff\xfe\x00garbage",
]


@pytest.mark.parametrize("path", list(BAD_BODIES))
async def test_bad_bodies_are_refused_cleanly(
    server: RunningServer, user_factory: UserFactory, client: httpx.AsyncClient, path: str
) -> None:
    headers = (await user_factory(server)).headers if path == "/auth/api-keys" else {}
    for body in BAD_BODIES[path]:
        response = await client.post(path, json=body, headers=headers)
        assert response.status_code == 422, (body if body is not HUGE else "HUGE", response.text)
        assert response.json()["code"] == "validation_error"
        assert HUGE not in response.text
    for raw in MALFORMED:
        response = await client.post(path, content=raw, headers={**headers, "Content-Type": "application/json"})
        assert 400 <= response.status_code < 500, (raw, response.text)
        assert "detail" in response.json()


async def test_lone_surrogates_in_fields_are_refused(client: httpx.AsyncClient, alice: TestUser) -> None:
    headers = {**alice.headers, "Content-Type": "application/json"}
    cases = {
        "/auth/register": b'{"email": "x\\ud800@example.com", "password": "long-enough"}',
        "/auth/login": b'{"email": "a@example.com", "password": "long-\\ud800-enough"}',
        "/auth/api-keys": b'{"name": "key \\udfff"}',
        "/auth/refresh": b'{"refresh_token": "\\ud800"}',
    }
    for path, raw in cases.items():
        response = await client.post(path, content=raw, headers=headers)
        assert response.status_code in (401, 422), (path, response.text)
        assert "code" in response.json()


async def test_registrations_are_limited_per_address_before_any_hash(server_factory: ServerFactory) -> None:
    server = await server_factory(registrations_per_hour=3)
    async with api(server) as client:
        answers = await asyncio.gather(*(register(client, f"burst{i}@example.com") for i in range(10)))
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [201] * 3 + [429] * 7
        limited = next(a for a in answers if a.status_code == 429)
        assert limited.json()["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 3600
        created = {a.json()["email"] for a in answers if a.status_code == 201}
        for email in created:
            assert (await login(client, email)).status_code == 200
        assert (await login(client, "burst-none@example.com")).status_code == 401


async def test_a_busy_default_executor_does_not_hold_up_logins(
    server: RunningServer, user_factory: UserFactory
) -> None:
    user = await user_factory(server)
    release = threading.Event()
    loop = asyncio.get_running_loop()
    # The test server shares this event loop: every thread of its default executor now waits (file extraction in
    # threads did this to logins).
    blockers = [loop.run_in_executor(None, release.wait, 60) for _ in range(64)]
    try:
        async with api(server) as client:
            answer = await asyncio.wait_for(login(client, user.email, TEST_PASSWORD), 30)
        assert answer.status_code == 200, answer.text
    finally:
        release.set()
        await asyncio.gather(*blockers)
