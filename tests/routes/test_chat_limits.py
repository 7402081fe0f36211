"""Per-user bounds of the chat socket: open sockets (then `rate_limited` and close 4429) and runs going at once
(then an `error` `rate_limited`, the socket stays usable)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerFactory, UserFactory
from tests.fakes.openai_script import say
from tests.fakes.openai_server import FakeOpenAI
from tests.routes.chat_support import Chat, Socket, connect, new_session


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


async def test_sockets_past_the_per_user_limit_get_rate_limited_then_4429(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    server = await server_factory(openai_base_url=fake.base_url, max_sockets_per_user=2)
    user, other = await user_factory(server), await user_factory(server)
    chat = Chat.on(server, user, await new_session(server, user))
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(connect(chat))
        await stack.enter_async_context(connect(chat))
        async with websockets.connect(chat.url(), open_timeout=10) as ws:
            refused = Socket(ws)
            frame = await refused.recv()
            assert frame["type"] == "error"
            assert frame["code"] == "rate_limited"
            with pytest.raises(ConnectionClosed):
                await refused.recv()
            assert ws.close_code == 4429
        # Another user is not held back, and the open sockets still work.
        other_chat = Chat.on(server, other, await new_session(server, other))
        async with connect(other_chat) as sock:
            await sock.ping()
        await first.ping()
    async with connect(chat) as sock:  # closed sockets give their slots back
        await sock.ping()


async def test_runs_past_the_per_user_limit_are_rate_limited(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    server = await server_factory(openai_base_url=fake.base_url, max_active_runs_per_user=1)
    user = await user_factory(server)
    busy = Chat.on(server, user, await new_session(server, user))
    idle = Chat.on(server, user, await new_session(server, user))
    fake.script(say("a long answer " * 20, delay=0.2))
    async with connect(busy) as running, connect(idle) as waiting:
        await running.send({"type": "message", "content": "take your time"})
        await running.until("assistant_start")
        await waiting.send({"type": "message", "content": "me too"})
        frame = await waiting.recv()
        assert frame["type"] == "error"
        assert frame["code"] == "rate_limited"
        assert frame["retryable"] is True
        await waiting.ping()
        await fake.wait_for_requests(1)  # the busy run has taken its script: the next one is the idle run's
        await running.send({"type": "interrupt"})
        await running.until("assistant_end")
        fake.script(say("now it is your turn"))
        await waiting.send({"type": "message", "content": "me too"})
        frames = await waiting.until("assistant_end", timeout=30)
        assert frames[-1]["finish_reason"] == "stop"
    assert [m["content"] for m in await idle.history()] == ["me too", "now it is your turn"]
