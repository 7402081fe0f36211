"""Who may call what: every route of the app and the chat socket, for the owner of a resource, another user, an
admin, no token, an expired token, a deleted API key and a disabled user's token.

The rows come from the app's own route table: a route added without a row here fails the test, so no route can
be left out of the matrix. Another user's resource answers 404 (as if it did not exist), never 403; a missing,
expired or revoked credential, or a disabled account's, answers 401 (4401 on the socket; another user's session
closes it with 4404). Admin routes answer 403 to every signed-in user who is not an admin.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
import websockets
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from websockets.exceptions import ConnectionClosed

from tests.conftest import TEST_PASSWORD, RunningServer, TestUser, UserFactory

SECRET = "test-secret-" + "x" * 40  # what settings_factory gives every test server
# The owner last: it may delete the resource.
IDENTITIES = ("other", "admin", "none", "expired", "revoked", "disabled", "owner")
NO_CREDENTIAL = ("none", "expired", "revoked", "disabled")


@dataclass
class Row:
    """How to call a route and what each identity gets. `kind`: `public` (the same `status` for everyone),
    `mine` (a user's own collection: every signed-in user gets `status`, no valid credential 401), `resource`
    (the owner gets `status`, other users 404, no valid credential 401) or `admin` (the admin gets `status`, other
    users 403, no valid credential 401)."""

    kind: str
    status: int
    params: dict[str, Any] | None = None
    json: Any = None
    upload: bool = False
    url: str | None = None
    """The path to call, when the template is not filled with the owner's ids (the client's assets)."""


def fresh_email() -> dict[str, str]:
    return {"email": f"matrix-{uuid.uuid4().hex[:10]}@example.com", "password": "matrix-password"}


ROWS: dict[tuple[str, str], Row] = {
    # The browser client's page and assets hold nothing of anyone's: the same for every caller.
    ("GET", "/"): Row("public", 200),
    ("GET", "/s/{session_id}"): Row("public", 200),
    ("GET", "/assets/{version}/{path:path}"): Row("public", 200, url="/assets/any-version/app.js"),
    # The API's own description (OpenAPI pages and their local assets, the socket's schemas): public.
    ("GET", "/docs"): Row("public", 200),
    ("GET", "/docs/oauth2-redirect"): Row("public", 200),
    ("GET", "/redoc"): Row("public", 200),
    ("GET", "/docs/assets/{name}"): Row("public", 200, url="/docs/assets/swagger-ui.css"),
    ("GET", "/api/v1/schema/websocket"): Row("public", 200),
    ("GET", "/asyncapi.json"): Row("public", 200),
    ("GET", "/health/live"): Row("public", 200),
    ("GET", "/health/ready"): Row("public", 200),
    ("GET", "/api/v1/config"): Row("public", 200),
    ("POST", "/api/v1/auth/register"): Row("public", 201, json=fresh_email),
    ("POST", "/api/v1/auth/login"): Row("public", 200, json="login"),
    ("POST", "/api/v1/auth/refresh"): Row("public", 401, json={"refresh_token": "cwr_not-a-real-one"}),
    ("POST", "/api/v1/auth/logout"): Row("public", 204, json={"refresh_token": "cwr_not-a-real-one"}),
    ("GET", "/api/v1/auth/me"): Row("mine", 200),
    ("PATCH", "/api/v1/auth/me"): Row("mine", 200, json={"display_name": "Matrix"}),
    # Every test user has the same password: the change keeps it, and revokes only refresh tokens.
    ("POST", "/api/v1/auth/password"): Row(
        "mine", 204, json={"current_password": TEST_PASSWORD, "new_password": TEST_PASSWORD}
    ),
    ("GET", "/api/v1/admin/users"): Row("admin", 200),
    ("POST", "/api/v1/admin/users"): Row("admin", 201, json=fresh_email),
    ("PATCH", "/api/v1/admin/users/{user_id}"): Row("admin", 200, json={"role": "user"}),
    ("DELETE", "/api/v1/admin/users/{user_id}"): Row("admin", 204),
    ("POST", "/api/v1/auth/api-keys"): Row("mine", 201, json={"name": "matrix"}),
    ("GET", "/api/v1/auth/api-keys"): Row("mine", 200),
    ("DELETE", "/api/v1/auth/api-keys/{key_id}"): Row("resource", 204),
    ("POST", "/api/v1/sessions"): Row("mine", 201, json={"title": "matrix"}),
    ("GET", "/api/v1/sessions"): Row("mine", 200),
    ("GET", "/api/v1/search"): Row("mine", 200, params={"q": "hello"}),
    ("GET", "/api/v1/sessions/{session_id}"): Row("resource", 200),
    ("PATCH", "/api/v1/sessions/{session_id}"): Row("resource", 200, json={"title": "renamed"}),
    ("DELETE", "/api/v1/sessions/{session_id}"): Row("resource", 204),
    ("GET", "/api/v1/sessions/{session_id}/messages"): Row("resource", 200),
    ("GET", "/api/v1/sessions/{session_id}/context"): Row("resource", 200),
    ("POST", "/api/v1/sessions/{session_id}/branch"): Row("resource", 200, json={"seq": 1}),
    ("GET", "/api/v1/sessions/{session_id}/export"): Row("resource", 200, params={"format": "markdown"}),
    ("POST", "/api/v1/sessions/import"): Row("mine", 201, json={"messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/api/v1/sessions/{session_id}/files"): Row("resource", 201, upload=True),
    ("GET", "/api/v1/sessions/{session_id}/files"): Row("resource", 200),
    ("GET", "/api/v1/sessions/{session_id}/files/{file_id}"): Row("resource", 200),
    ("GET", "/api/v1/sessions/{session_id}/files/{file_id}/content"): Row("resource", 200),
    ("DELETE", "/api/v1/sessions/{session_id}/files/{file_id}"): Row("resource", 204),
}
SOCKETS = {
    "/ws/chat/{session_id}": {"owner": "ready", "other": 4404, "admin": 4404} | dict.fromkeys(NO_CREDENTIAL, 4401)
}


def route_table(server: RunningServer) -> tuple[set[tuple[str, str]], set[str]]:
    http: set[tuple[str, str]] = set()
    sockets: set[str] = set()
    for route in iter_route_contexts(server.app.routes):
        if isinstance(route.original_route, APIRoute):
            http |= {(method, str(route.path)) for method in route.methods or ()}
        elif isinstance(route.original_route, APIWebSocketRoute):
            sockets.add(str(route.path))
    return http, sockets


def expected(row: Row, identity: str) -> int:
    if row.kind == "public":
        return row.status
    if identity in NO_CREDENTIAL:
        return 401
    if row.kind == "admin":
        return row.status if identity == "admin" else 403
    if row.kind == "mine" or identity == "owner":
        return row.status
    return 404


class Resources:
    """The owner's resources, made fresh for each row (a row's owner call may delete them)."""

    def __init__(self, client: httpx.AsyncClient, owner: TestUser, admin: TestUser) -> None:
        self.client = client
        self.owner = owner
        self.admin = admin

    async def make(self) -> dict[str, str]:
        headers = self.owner.headers
        # Imported, so that it holds messages (a branch to switch to).
        conversation = {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]}
        imported = await self.client.post("/api/v1/sessions/import", json=conversation, headers=headers)
        session_id = imported.json()["id"]
        upload = await self.client.post(
            f"/api/v1/sessions/{session_id}/files", files={"file": ("a.txt", b"hello", "text/plain")}, headers=headers
        )
        key = await self.client.post("/api/v1/auth/api-keys", json={"name": "victim"}, headers=headers)
        target = await self.client.post("/api/v1/admin/users", json=fresh_email(), headers=self.admin.headers)
        return {
            "session_id": session_id,
            "file_id": upload.json()["id"],
            "key_id": key.json()["id"],
            "user_id": target.json()["id"],
        }


@pytest.fixture
async def identities(server: RunningServer, user_factory: UserFactory) -> dict[str, Any]:
    owner, other = await user_factory(server), await user_factory(server)
    admin = await user_factory(server, admin=True)
    disabled = await user_factory(server)
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", headers=admin.headers, timeout=60) as c:
        assert (await c.patch(f"/admin/users/{disabled.id}", json={"disabled": True})).status_code == 200
    now = int(time.time())
    expired = jwt.encode(
        {"sub": owner.id, "typ": "access", "iat": now - 3600, "exp": now - 60}, SECRET, algorithm="HS256"
    )
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", headers=owner.headers, timeout=60) as c:
        created = (await c.post("/auth/api-keys", json={"name": "to revoke"})).json()
        assert (await c.delete(f"/auth/api-keys/{created['id']}")).status_code == 204
    tokens = {
        "owner": owner.access_token,
        "other": other.access_token,
        "admin": admin.access_token,
        "none": None,
        "expired": expired,
        "revoked": created["key"],
        "disabled": disabled.access_token,
    }
    return {"owner": owner, "admin": admin, "tokens": tokens}


async def call(
    client: httpx.AsyncClient, method: str, path: str, row: Row, token: str | None, owner: TestUser
) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    body: Any = row.json() if callable(row.json) else row.json
    if body == "login":
        body = {"email": owner.email, "password": owner.password}
    files = {"file": ("m.txt", b"matrix", "text/plain")} if row.upload else None
    return await client.request(method, path, params=row.params, json=body, files=files, headers=headers)


async def socket_answer(url: str) -> str | int | None:
    async with websockets.connect(url, open_timeout=10) as ws:
        try:
            first = await ws.recv(decode=True)
        except ConnectionClosed as closed:
            return None if closed.rcvd is None else closed.rcvd.code
        return "ready" if '"ready"' in str(first) else str(first)


async def test_every_route_has_a_row_and_every_cell_holds(server: RunningServer, identities: dict[str, Any]) -> None:
    http, sockets = route_table(server)
    assert http - ROWS.keys() == set(), "routes without a row in the access matrix"
    assert ROWS.keys() - http == set(), "rows for routes that no longer exist"
    assert sockets == SOCKETS.keys(), "sockets without a row in the access matrix"
    owner: TestUser = identities["owner"]
    tokens: dict[str, str | None] = identities["tokens"]
    failures: list[str] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        resources = Resources(client, owner, identities["admin"])
        for (method, template), row in sorted(ROWS.items()):
            ids = await resources.make()
            path = row.url or template.format(**ids)
            for identity in IDENTITIES:
                answer = await call(client, method, path, row, tokens[identity], owner)
                if answer.status_code != expected(row, identity):
                    failures.append(
                        f"{method} {template} as {identity}: {answer.status_code}, not "
                        f"{expected(row, identity)} ({answer.text[:100]})"
                    )
                elif answer.status_code >= 400:
                    assert set(answer.json()) == {"detail", "code"}, answer.text
                    if identity == "disabled" and row.kind != "public":
                        assert answer.json()["code"] == "account_disabled", answer.text
        for template, cells in SOCKETS.items():
            ids = await resources.make()
            for identity, want in cells.items():
                token = tokens[identity] or ""
                url = server.ws_url + template.format(**ids) + (f"?token={token}" if token else "")
                got = await socket_answer(url)
                if got != want:
                    failures.append(f"socket {template} as {identity}: {got}, not {want}")
    assert failures == []
