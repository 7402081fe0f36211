"""The app's pool on a real PostgreSQL: a request that finds every connection busy answers 503, never waits without
end."""

from __future__ import annotations

import httpx

from tests.conftest import ServerFactory, UserFactory


async def test_a_busy_pool_answers_503_after_the_acquire_timeout(
    server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    server = await server_factory(db_pool_size=1, db_acquire_timeout_s=0.5)
    user = await user_factory(server)
    pool = server.app.state.pool
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", headers=user.headers, timeout=60) as client:
        async with pool.acquire(timeout=30):  # the only connection, held
            answer = await client.get("/sessions")
        assert answer.status_code == 503, answer.text
        assert answer.json()["code"] == "unavailable"
        assert "retry-after" in answer.headers
        assert (await client.get("/sessions")).status_code == 200  # free again: served
