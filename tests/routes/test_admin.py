"""`/admin/users` and the user's own `PATCH /auth/me` and `POST /auth/password`, over a real server and database."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import httpx

from chinwag.services.admin_service import encode_cursor
from tests.conftest import TEST_PASSWORD, RunningServer, ServerFactory, TestUser, UserFactory


def api(server: RunningServer, user: TestUser | None = None) -> httpx.AsyncClient:
    headers = user.headers if user is not None else {}
    return httpx.AsyncClient(base_url=server.url + "/api/v1", headers=headers, timeout=30)


async def login(server: RunningServer, email: str, password: str = TEST_PASSWORD) -> httpx.Response:
    async with api(server) as c:
        return await c.post("/auth/login", json={"email": email, "password": password})


async def test_a_user_renames_themselves(server: RunningServer, alice: TestUser) -> None:
    async with api(server, alice) as c:
        answer = await c.patch("/auth/me", json={"display_name": "  Alice   Liddell "})
        assert answer.status_code == 200, answer.text
        assert answer.json()["display_name"] == "Alice Liddell"
        assert (await c.get("/auth/me")).json()["display_name"] == "Alice Liddell"
        assert (await c.patch("/auth/me", json={"display_name": "   "})).status_code == 422
        assert (await c.patch("/auth/me", json={"display_name": "x" * 101})).status_code == 422
        assert (await c.patch("/auth/me", json={})).status_code == 422


async def test_a_password_change_ends_the_other_sign_ins(
    server: RunningServer, user_factory: UserFactory, alice: TestUser
) -> None:
    other_sign_in = (await login(server, alice.email)).json()
    async with api(server, alice) as c:
        wrong = await c.post("/auth/password", json={"current_password": "not it at all", "new_password": "n" * 12})
        assert wrong.status_code == 401
        assert wrong.json()["code"] == "invalid_credentials"
        short = await c.post("/auth/password", json={"current_password": TEST_PASSWORD, "new_password": "short"})
        assert short.status_code == 422
        changed = await c.post("/auth/password", json={"current_password": TEST_PASSWORD, "new_password": "n" * 12})
        assert changed.status_code == 204, changed.text
        # The access token in hand keeps working until it expires.
        assert (await c.get("/auth/me")).status_code == 200
        for token in (alice.refresh_token, other_sign_in["refresh_token"]):
            refreshed = await c.post("/auth/refresh", json={"refresh_token": token})
            assert refreshed.status_code == 401, refreshed.text
    assert (await login(server, alice.email)).status_code == 401
    assert (await login(server, alice.email, "n" * 12)).status_code == 200


async def test_admin_routes_refuse_users_and_anonymous_callers(
    server: RunningServer, user_factory: UserFactory, alice: TestUser
) -> None:
    admin = await user_factory(server, admin=True)
    target = alice.id
    calls = [
        ("GET", "/admin/users", None),
        ("POST", "/admin/users", {"email": "new@example.com", "password": "p" * 10}),
        ("PATCH", f"/admin/users/{target}", {"role": "admin"}),
        ("DELETE", f"/admin/users/{target}", None),
    ]
    for who, status, code in ((alice, 403, "forbidden"), (None, 401, "unauthorized")):
        async with api(server, who) as c:
            for method, path, body in calls:
                answer = await c.request(method, path, json=body)
                assert (answer.status_code, answer.json()["code"]) == (status, code), (method, path, answer.text)
    async with api(server, admin) as c:
        # Nothing was changed by the refused calls.
        listed = (await c.get("/admin/users")).json()["items"]
        assert {u["email"] for u in listed} == {alice.email, admin.email}
        assert next(u for u in listed if u["id"] == target)["role"] == "user"


async def test_list_pages_by_email_with_a_prefix_filter_and_shows_usage(
    server: RunningServer, user_factory: UserFactory, db: asyncpg.Connection
) -> None:
    admin = await user_factory(server, "zz-admin@example.com", admin=True)
    users = [await user_factory(server, f"page-{i:02d}@example.com") for i in range(5)]
    await user_factory(server, "other@example.com")
    async with api(server, users[0]) as c:
        await c.post("/sessions", json={"title": "one"})
        await c.post("/sessions", json={"title": "two"})
    await db.execute(
        "UPDATE sessions SET input_tokens = 7, output_tokens = 3 WHERE user_id = $1", uuid.UUID(users[0].id)
    )
    async with api(server, admin) as c:
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, str | int] = {"limit": 2, "q": "PAGE-"}
            if cursor:
                params["cursor"] = cursor
            page = (await c.get("/admin/users", params=params)).json()
            seen += [u["email"] for u in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [u.email for u in users]
        first = (await c.get("/admin/users", params={"q": users[0].email})).json()["items"]
        assert len(first) == 1
        assert first[0]["session_count"] == 2
        assert first[0]["usage"] == {"input_tokens": 14, "output_tokens": 6}
        assert first[0]["disabled"] is False
        assert first[0]["last_login_at"] is not None  # the factory logged in
        assert set(first[0]) == {
            "id", "email", "display_name", "role", "created_at",
            "disabled", "last_login_at", "session_count", "usage",
        }  # fmt: skip
        for bad in ({"limit": 0}, {"limit": 101}, {"q": "x" * 300}):
            assert (await c.get("/admin/users", params=bad)).status_code == 422
        nul_cursor = encode_cursor("a\x00b@example.com", str(uuid.uuid4()))
        for bad in ({"cursor": "not-ours"}, {"cursor": nul_cursor}, {"q": "page\x00"}):
            answer = await c.get("/admin/users", params=bad)
            assert (answer.status_code, answer.json()["code"]) == (400, "bad_request"), answer.text


async def test_an_admin_creates_users_even_with_registration_closed(
    server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    server = await server_factory()
    admin = await user_factory(server, admin=True)
    closed = await server_factory(registration="closed")
    async with api(closed, admin) as c:
        made = await c.post(
            "/admin/users",
            json={"email": "New.Person@Example.com", "password": "p" * 10, "display_name": "New", "role": "admin"},
        )
        assert made.status_code == 201, made.text
        body = made.json()
        assert (body["email"], body["role"], body["display_name"], body["disabled"]) == (
            "new.person@example.com",
            "admin",
            "New",
            False,
        )
        again = await c.post("/admin/users", json={"email": "new.person@example.com", "password": "p" * 10})
        assert (again.status_code, again.json()["code"]) == (409, "conflict")
        assert (await c.post("/admin/users", json={"email": "x@example.com", "password": "short"})).status_code == 422
        plain = await c.post("/admin/users", json={"email": "plain@example.com", "password": "p" * 10})
        assert plain.json()["role"] == "user"
        assert plain.json()["display_name"] == "plain"
    assert (await login(closed, "new.person@example.com", "p" * 10)).status_code == 200


async def test_patch_changes_role_and_password_and_unknown_ids_are_404(
    server: RunningServer, user_factory: UserFactory, alice: TestUser
) -> None:
    admin = await user_factory(server, admin=True)
    async with api(server, admin) as c:
        promoted = await c.patch(f"/admin/users/{alice.id}", json={"role": "admin"})
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["role"] == "admin"
        reset = await c.patch(f"/admin/users/{alice.id}", json={"password": "reset-password"})
        assert reset.status_code == 200
        assert (await c.post("/auth/refresh", json={"refresh_token": alice.refresh_token})).status_code == 401
        for missing in (str(uuid.uuid4()), "not-a-uuid"):
            for method, body in (("PATCH", {"role": "user"}), ("DELETE", None)):
                answer = await c.request(method, f"/admin/users/{missing}", json=body)
                assert (answer.status_code, answer.json()["code"]) == (404, "not_found"), answer.text
        assert (await c.patch(f"/admin/users/{alice.id}", json={"role": "owner"})).status_code == 422
        assert (await c.patch(f"/admin/users/{alice.id}", json={"disabled": "yes"})).status_code == 422
    assert (await login(server, alice.email)).status_code == 401
    signed_in = await login(server, alice.email, "reset-password")
    assert signed_in.json()["user"]["role"] == "admin"


async def test_the_last_active_admin_cannot_be_demoted_disabled_or_deleted(
    server: RunningServer, user_factory: UserFactory, alice: TestUser
) -> None:
    admin = await user_factory(server, admin=True)
    async with api(server, admin) as c:
        for method, body in (("PATCH", {"role": "user"}), ("PATCH", {"disabled": True}), ("DELETE", None)):
            answer = await c.request(method, f"/admin/users/{admin.id}", json=body)
            assert (answer.status_code, answer.json()["code"]) == (409, "conflict"), answer.text
        # A disabled admin does not count: with Alice an admin but disabled, the rule still holds.
        await c.patch(f"/admin/users/{alice.id}", json={"role": "admin", "disabled": True})
        answer = await c.patch(f"/admin/users/{admin.id}", json={"role": "user"})
        assert answer.status_code == 409
        # Once Alice is active again, either may step down.
        await c.patch(f"/admin/users/{alice.id}", json={"disabled": False})
        answer = await c.patch(f"/admin/users/{admin.id}", json={"role": "user"})
        assert answer.status_code == 200
        assert (await c.get("/admin/users")).status_code == 403  # no longer an admin
    alice_again = (await login(server, alice.email)).json()
    async with api(server) as c:
        c.headers["Authorization"] = f"Bearer {alice_again['access_token']}"
        answer = await c.delete(f"/admin/users/{alice.id}")
        assert answer.status_code == 409
        listed = (await c.get("/admin/users")).json()["items"]
        assert {u["email"]: u["role"] for u in listed} == {alice.email: "admin", admin.email: "user"}


async def test_two_admins_demoting_each_other_at_once_leave_one(
    server: RunningServer, user_factory: UserFactory, db: asyncpg.Connection
) -> None:
    for _ in range(5):
        await db.execute("DELETE FROM users")
        first, second = await user_factory(server, admin=True), await user_factory(server, admin=True)
        async with api(server, first) as a, api(server, second) as b:
            answers = await asyncio.gather(
                a.patch(f"/admin/users/{second.id}", json={"role": "user"}),
                b.patch(f"/admin/users/{first.id}", json={"role": "user"}),
            )
        assert sorted(r.status_code for r in answers) in ([200, 409], [200, 403]), [r.text for r in answers]
        admins = await db.fetchval("SELECT count(*) FROM users WHERE role = 'admin' AND NOT disabled")
        assert admins == 1


async def test_delete_removes_everything_of_the_user_and_their_files_on_disk(
    server: RunningServer, user_factory: UserFactory, alice: TestUser, bob: TestUser, db: asyncpg.Connection
) -> None:
    admin = await user_factory(server, admin=True)
    data_dir = Path(server.app.state.settings.data_dir)
    async with api(server, alice) as c:
        session_id = (await c.post("/sessions", json={"title": "alice's"})).json()["id"]
        upload = await c.post(
            f"/sessions/{session_id}/files", files={"file": ("a.txt", b"alice's secret", "text/plain")}
        )
        assert upload.status_code == 201, upload.text
        await c.post("/auth/api-keys", json={"name": "k"})
    async with api(server, bob) as c:
        bob_session = (await c.post("/sessions", json={"title": "bob's"})).json()["id"]
        await c.post(f"/sessions/{bob_session}/files", files={"file": ("b.txt", b"bob's file", "text/plain")})
    on_disk = [p for p in data_dir.rglob("*") if p.is_file() and p.read_bytes() == b"alice's secret"]
    assert on_disk, "the upload should be on disk before the delete"

    async with api(server, admin) as c:
        assert (await c.delete(f"/admin/users/{alice.id}")).status_code == 204
        assert (await c.delete(f"/admin/users/{alice.id}")).status_code == 404
    assert not any(p.exists() for p in on_disk)
    assert [p for p in data_dir.rglob("*") if p.is_file() and p.read_bytes() == b"bob's file"]
    uid = uuid.UUID(alice.id)
    for query in (
        "SELECT count(*) FROM sessions WHERE user_id = $1",
        "SELECT count(*) FROM api_keys WHERE user_id = $1",
        "SELECT count(*) FROM refresh_tokens WHERE user_id = $1",
    ):
        assert await db.fetchval(query, uid) == 0
    assert await db.fetchval("SELECT count(*) FROM files WHERE session_id = $1", uuid.UUID(session_id)) == 0
    async with api(server, alice) as c:
        assert (await c.get("/auth/me")).status_code == 401
    assert (await login(server, alice.email)).status_code == 401
    async with api(server, bob) as c:
        assert (await c.get(f"/sessions/{bob_session}")).status_code == 200


async def test_a_disabled_user_is_locked_out_until_enabled(
    server: RunningServer, user_factory: UserFactory, alice: TestUser
) -> None:
    admin = await user_factory(server, admin=True)
    async with api(server, alice) as c:
        key = (await c.post("/auth/api-keys", json={"name": "k"})).json()["key"]
    async with api(server, admin) as c:
        answer = await c.patch(f"/admin/users/{alice.id}", json={"disabled": True})
        assert answer.status_code == 200
        assert answer.json()["disabled"] is True
    async with api(server) as c:
        for token in (alice.access_token, key):
            me = await c.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
            assert (me.status_code, me.json()["code"]) == (401, "account_disabled"), me.text
        refreshed = await c.post("/auth/refresh", json={"refresh_token": alice.refresh_token})
        assert (refreshed.status_code, refreshed.json()["code"]) == (401, "account_disabled")
    refused = await login(server, alice.email)
    assert (refused.status_code, refused.json()["code"]) == (401, "account_disabled")
    wrong = await login(server, alice.email, "not the password")
    assert wrong.json()["code"] == "invalid_credentials"  # the state is told only to whoever knows the password

    async with api(server, admin) as c:
        assert (await c.patch(f"/admin/users/{alice.id}", json={"disabled": False})).json()["disabled"] is False
    again = await login(server, alice.email)
    assert again.status_code == 200
    async with api(server) as c:
        assert (await c.get("/auth/me", headers={"Authorization": f"Bearer {key}"})).status_code == 200
        # The sign-in from before the disable stays ended.
        assert (await c.post("/auth/refresh", json={"refresh_token": alice.refresh_token})).status_code == 401
