"""hypothesis throws frames at a real chat socket: JSON of any shape (with and without a known `type`), text that
is not JSON, binary. Each gets an answer the published schema allows (an `error`, or a run's events for a frame
that happens to be a valid message) and the socket stays open: it still answers `ping` after every frame."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect
from websockets.sync.connection import Connection

from chinwag.websocket.events import validate_server_frame
from tests.conftest import ServerFactory, UserFactory
from tests.fakes.openai_script import say
from tests.fakes.openai_server import FakeOpenAI
from tests.routes.chat_support import Chat, new_session

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
known_types = st.sampled_from(["message", "interrupt", "resume", "ping", "regenerate", "edit", "nope", ""])
shaped = st.fixed_dictionaries(
    {"type": known_types},
    optional={
        "content": json_values | st.text(max_size=60),
        "client_id": json_values,
        "file_ids": json_values,
        "run_id": json_values,
        "after_seq": json_values,
        "seq": json_values,
    },
)
frames = st.one_of(
    shaped.map(json.dumps),
    json_values.map(json.dumps),  # stdlib: integers past 64 bits too
    st.text(max_size=200),
    st.binary(max_size=200),
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI.start(default=say("A short answer.")) as server:
        yield server


def answer_then_pong(ws: Connection) -> list[dict[str, Any]]:
    """Ping after the frame; every frame up to the pong must be one the schema allows."""
    ws.send(orjson.dumps({"type": "ping"}).decode())
    seen: list[dict[str, Any]] = []
    while True:
        raw = ws.recv(timeout=30)
        assert isinstance(raw, str), raw
        validate_server_frame(raw)
        frame = orjson.loads(raw)
        if frame["type"] == "pong":
            return seen
        seen.append(frame)


def fuzz(url: str) -> None:
    with connect(url, open_timeout=10, max_size=None) as ws:
        assert orjson.loads(ws.recv(timeout=10))["type"] == "ready"

        @settings(
            max_examples=80,
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(frame=frames)
        def one(frame: str | bytes) -> None:
            ws.send(frame)
            answer_then_pong(ws)  # raises if the socket closed, or a frame is off the schema

        one()
        ws.send(orjson.dumps({"type": "interrupt"}).decode())
        answer_then_pong(ws)


async def test_random_frames_get_schema_answers_and_the_socket_stays_open(
    fake: FakeOpenAI, server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    server = await server_factory(openai_base_url=fake.base_url)
    user = await user_factory(server)
    chat = Chat.on(server, user, await new_session(server, user))
    await asyncio.to_thread(fuzz, chat.url())
