"""GET /api/v1/sessions/{id}/context: what the model sees next turn, over real HTTP on a real database."""

from __future__ import annotations

import uuid
from typing import Any, cast

import asyncpg
import httpx
import pytest
from agents import TResponseInputItem

from chinwag.llm.tokens import TiktokenCounter
from chinwag.services.context_items import SUMMARY_PREFIX, summary_item
from chinwag.services.postgres_session import PostgresSession
from tests.conftest import RunningServer, ServerFactory, TestUser, UserFactory
from tests.services.layer1_support import WordCounter, assistant, call, output, user, words

WINDOW = 200  # the default reserve keeps a quarter free: 150 tokens of history


@pytest.fixture
async def server(server_factory: ServerFactory) -> RunningServer:
    return await server_factory(models=f"tiny:{WINDOW}")


async def create_session(server: RunningServer, owner: TestUser) -> str:
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", headers=owner.headers, timeout=60) as c:
        response = await c.post("/sessions", json={"title": "t"})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


async def get_context(server: RunningServer, owner: TestUser | None, session_id: str) -> httpx.Response:
    headers = owner.headers if owner is not None else {}
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", headers=headers, timeout=60) as c:
        return await c.get(f"/sessions/{session_id}/context")


async def test_a_new_session_has_an_empty_context(
    server: RunningServer, user_factory: UserFactory, app_pool: asyncpg.Pool
) -> None:
    alice = await user_factory(server)
    session_id = await create_session(server, alice)
    response = await get_context(server, alice, session_id)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "tokens": 0,
        "limit": WINDOW,
        "items": [],
        "summarized_through_seq": None,
        "summary": None,
    }


async def test_the_context_is_the_summary_then_the_newest_whole_turns_that_fit(
    server: RunningServer, user_factory: UserFactory, app_pool: asyncpg.Pool
) -> None:
    alice = await user_factory(server)
    session_id = await create_session(server, alice)
    store = PostgresSession(app_pool, session_id, counter=WordCounter())
    turns: list[list[dict[str, Any]]] = []
    for n in range(1, 11):
        store.turn_seq = 2 * n - 1  # the seq of each turn's user message in Layer 2
        turn = [user(words(10, f"q{n}")), assistant(words(10, f"a{n}"))]  # 24 tokens each
        if n == 9:
            turn = [user("look"), call("c9"), output("c9", words(20)), assistant(words(10))]  # 3 + 5 + 23 + 12
        await store.add_items(cast(list[TResponseInputItem], turn))
        turns.append(turn)
    await app_pool.execute(
        "UPDATE sessions SET summary = 'They talked about q1 to q4.', summarized_through_seq = 7 WHERE id = $1",
        session_id,
    )

    response = await get_context(server, alice, session_id)

    assert response.status_code == 200, response.text
    body = response.json()
    summary_tokens = server.app.state.llm.counter.count_item(summary_item("They talked about q1 to q4."))
    assert summary_tokens == TiktokenCounter().count_item(summary_item("They talked about q1 to q4."))
    # Turns 5-10 are not summarized (24 * 5 + 43 = 163 tokens); with the summary (30) only turns 7-10 fit in 150.
    assert summary_tokens + 24 * 3 + 43 <= 150 < summary_tokens + 24 * 4 + 43
    kept = [item for turn in turns[6:] for item in turn]
    assert body["items"][0] == {
        "type": "message",
        "role": "system",
        "content": f"{SUMMARY_PREFIX}\n\nThey talked about q1 to q4.",
    }
    assert body["items"][1:] == kept
    assert body["tokens"] == summary_tokens + 24 * 3 + 43
    assert body["tokens"] <= WINDOW
    assert body["limit"] == WINDOW
    assert body["summarized_through_seq"] == 7
    assert body["summary"] == "They talked about q1 to q4."


async def test_another_users_session_is_not_found(server: RunningServer, user_factory: UserFactory) -> None:
    alice = await user_factory(server)
    bob = await user_factory(server)
    session_id = await create_session(server, alice)
    for who, sid in ((bob, session_id), (alice, str(uuid.uuid4())), (alice, "not-a-uuid")):
        response = await get_context(server, who, sid)
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "not_found"


async def test_the_context_needs_authentication(server: RunningServer, user_factory: UserFactory) -> None:
    alice = await user_factory(server)
    session_id = await create_session(server, alice)
    response = await get_context(server, None, session_id)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
