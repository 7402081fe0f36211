"""The auth API over real HTTP: registration, login, refresh rotation, logout, API keys."""

from __future__ import annotations

import httpx

from tests.conftest import RunningServer, TestUser, UserFactory


async def test_register_then_login(client: httpx.AsyncClient) -> None:
    registered = await client.post(
        "/auth/register", json={"email": "  Carol@Example.COM ", "password": "s3cret-password", "display_name": "Carol"}
    )
    assert registered.status_code == 201, registered.text
    user = registered.json()
    assert user["email"] == "carol@example.com"
    assert user["display_name"] == "Carol"
    assert user["role"] == "user"
    assert set(user) == {"id", "email", "display_name", "role", "created_at"}

    login = await client.post("/auth/login", json={"email": "CAROL@example.com", "password": "s3cret-password"})
    assert login.status_code == 200, login.text
    tokens = login.json()
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] > 0
    assert tokens["user"] == user

    me = await client.get("/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200
    assert me.json() == user


async def test_user_factory_and_pair(alice: TestUser, bob: TestUser, client: httpx.AsyncClient) -> None:
    assert alice.id != bob.id
    me = await client.get("/auth/me", headers=alice.headers)
    assert me.json()["email"] == "alice@example.com"


async def test_user_factory_admin(server: RunningServer, user_factory: UserFactory, client: httpx.AsyncClient) -> None:
    admin = await user_factory(server, admin=True)
    me = await client.get("/auth/me", headers=admin.headers)
    assert me.json()["role"] == "admin"
