"""A session whose model was removed from CHINWAG_MODELS runs on the default model, and its sockets are told."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import ServerFactory, UserFactory
from tests.fakes.openai_script import say
from tests.fakes.openai_server import FakeOpenAI
from tests.routes.chat_support import Chat, connect, new_session


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start() as server:
        yield server


async def test_a_removed_model_falls_back_to_the_default_with_session_updated(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    before = await server_factory(openai_base_url=fake.base_url, models="kept-model:8192,gone-model:8192")
    user = await user_factory(before)
    session_id = await new_session(before, user, model="gone-model", title="kept title")

    # The operator removes the model and restarts (same database).
    after = await server_factory(openai_base_url=fake.base_url, models="kept-model:8192")
    chat = Chat.on(after, user, session_id)
    fake.script(say("Still here."))
    async with connect(chat) as sock:
        await sock.send({"type": "message", "content": "hello"})
        frames = await sock.until("assistant_end", timeout=30)
    updates = [f for f in frames if f["type"] == "session_updated"]
    assert len(updates) == 1
    assert updates[0]["session"]["model"] == "kept-model"
    assert frames.index(updates[0]) < [f["type"] for f in frames].index("user_message")  # told before the run
    assert frames[-1]["finish_reason"] == "stop"
    assert fake.requests[0].body["model"] == "kept-model"
    assert (await chat.session())["model"] == "kept-model"
