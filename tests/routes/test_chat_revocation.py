"""A chat socket's credential is checked again while it is open: a deleted API key or user, or an expired access
token, closes it with 4401 (at the next periodic check, and at once when it tries to start a run)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerFactory, UserFactory
from tests.fakes.openai_script import say
from tests.fakes.openai_server import FakeOpenAI
from tests.routes.chat_support import Chat, Socket, connect, new_session


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


async def make_chat(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, **settings: object
) -> Chat:
    server = await server_factory(openai_base_url=fake.base_url, **settings)
    user = await user_factory(server)
    return Chat.on(server, user, await new_session(server, user))


async def api_key(chat: Chat) -> tuple[str, str]:
    async with httpx.AsyncClient(base_url=chat.base_url + "/api/v1", headers=chat.user.headers, timeout=60) as c:
        created = (await c.post("/auth/api-keys", json={"name": "socket"})).json()
    return created["id"], created["key"]


async def delete_key(chat: Chat, key_id: str) -> None:
    async with httpx.AsyncClient(base_url=chat.base_url + "/api/v1", headers=chat.user.headers, timeout=60) as c:
        assert (await c.delete(f"/auth/api-keys/{key_id}")).status_code == 204


async def closed_with(sock: Socket) -> int | None:
    """Wait (generously) for the server to close the socket; frames before the close must not be a run's."""
    async with asyncio.timeout(30):
        while True:
            try:
                frame = await sock.recv(timeout=30)
            except ConnectionClosed:
                return sock.ws.close_code
            assert frame["type"] not in ("user_message", "assistant_start", "text_delta"), frame


async def test_a_deleted_api_key_closes_its_open_socket(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    chat = await make_chat(fake, server_factory, user_factory, ws_auth_recheck_s=0.5)
    key_id, key = await api_key(chat)
    async with connect(chat, token=key) as sock:
        await sock.ping()
        await delete_key(chat, key_id)
        assert await closed_with(sock) == 4401


async def test_a_deleted_user_and_an_expired_token_close_their_sockets(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, db: asyncpg.Connection
) -> None:
    chat = await make_chat(fake, server_factory, user_factory, ws_auth_recheck_s=0.5, access_token_ttl_s=2)
    async with connect(chat) as sock:
        await sock.ping()
        assert await closed_with(sock) == 4401  # the access token expired while the socket was open
    other = await user_factory(chat.running)
    other_chat = Chat.on(chat.running, other, await new_session(chat.running, other))
    _, key = await api_key(other_chat)
    async with connect(other_chat, token=key) as sock:
        await db.execute("DELETE FROM users WHERE id = $1", uuid.UUID(other.id))
        assert await closed_with(sock) == 4401


async def test_starting_a_run_checks_the_credential_first(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, db: asyncpg.Connection
) -> None:
    chat = await make_chat(fake, server_factory, user_factory)  # the periodic check is a minute away
    fake.script(say("never sent"))
    key_id, key = await api_key(chat)
    async with connect(chat, token=key) as sock:
        await delete_key(chat, key_id)
        await sock.send({"type": "message", "content": "hello"})
        assert await closed_with(sock) == 4401
    assert await db.fetchval("SELECT count(*) FROM messages") == 0
    assert await db.fetchval("SELECT count(*) FROM runs") == 0


async def test_disabling_a_user_interrupts_their_run_and_closes_their_sockets_at_once(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory, db: asyncpg.Connection
) -> None:
    # The periodic re-check is a minute away: only the disable itself can close these sockets in time.
    chat = await make_chat(fake, server_factory, user_factory, ws_auth_recheck_s=60)
    admin = await user_factory(chat.running, admin=True)
    _, key = await api_key(chat)
    words = " ".join(f"w{i}" for i in range(400))
    fake.script(say(words, delay=0.02))
    async with connect(chat) as sock, connect(chat, token=key) as by_key:
        await sock.send({"type": "message", "content": "talk for a long while"})
        await sock.until("text_delta", timeout=30)
        async with httpx.AsyncClient(base_url=chat.base_url + "/api/v1", headers=admin.headers, timeout=60) as c:
            answer = await c.patch(f"/admin/users/{chat.user.id}", json={"disabled": True})
            assert answer.status_code == 200, answer.text
        codes = []
        for s in (sock, by_key):
            async with asyncio.timeout(30):
                while True:
                    try:
                        await s.recv(timeout=30)
                    except ConnectionClosed:
                        codes.append(s.ws.close_code)
                        break
        assert codes == [4401, 4401]
    session_id = uuid.UUID(chat.session_id)
    async with asyncio.timeout(30):
        while True:
            row = await db.fetchrow(
                "SELECT status, content FROM messages WHERE session_id = $1 AND role = 'assistant'", session_id
            )
            if row is not None and row["status"] != "streaming":
                break
            await asyncio.sleep(0.1)
    assert row["status"] == "interrupted"
    assert len(row["content"]) < len(words)
    # A socket opened while disabled is refused too.
    with pytest.raises(ConnectionClosed) as refused:
        async with connect(chat):
            pass
    assert refused.value.rcvd is not None
    assert refused.value.rcvd.code == 4401
