"""Both rate limiters keep the same contract; the Redis one is shared by every process that uses the same Redis."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from chinwag.services.rate_limit import InMemoryRateLimiter, RateLimiter, RedisRateLimiter
from tests.conftest import ServerFactory


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    if request.param == "memory":
        yield InMemoryRateLimiter()
        return
    client = Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        yield RedisRateLimiter(client, prefix=f"chinwag-test:{uuid.uuid4().hex}:")
    finally:
        await client.aclose()


async def test_limit_then_wait_then_allowed_again(limiter: RateLimiter) -> None:
    for _ in range(3):
        assert await limiter.acquire("k", limit=3, window_s=0.5) == 0
    wait = await limiter.acquire("k", limit=3, window_s=0.5)
    assert 0 < wait <= 0.5
    assert await limiter.acquire("other", limit=3, window_s=0.5) == 0
    await asyncio.sleep(wait + 0.05)
    assert await limiter.acquire("k", limit=3, window_s=0.5) == 0


async def test_release_gives_the_slot_back(limiter: RateLimiter) -> None:
    assert await limiter.acquire("k", limit=1, window_s=60) == 0
    assert await limiter.acquire("k", limit=1, window_s=60) > 0
    await limiter.release("k")
    assert await limiter.acquire("k", limit=1, window_s=60) == 0
    await limiter.release("unknown")


async def test_concurrent_hits_never_exceed_the_limit(limiter: RateLimiter) -> None:
    waits = await asyncio.gather(*(limiter.acquire("burst", limit=5, window_s=60) for _ in range(20)))
    assert sum(1 for w in waits if w == 0) == 5


async def test_redis_limiter_is_shared_and_keeps_no_plain_keys(redis: Redis, redis_url: str) -> None:
    prefix = f"chinwag-test:{uuid.uuid4().hex}:"
    other = Redis.from_url(redis_url)
    try:
        first, second = RedisRateLimiter(redis, prefix=prefix), RedisRateLimiter(other, prefix=prefix)
        assert await first.acquire("login:account:zoe@example.com", limit=2, window_s=60) == 0
        assert await second.acquire("login:account:zoe@example.com", limit=2, window_s=60) == 0
        assert await first.acquire("login:account:zoe@example.com", limit=2, window_s=60) > 0
        keys = [k.decode() async for k in redis.scan_iter(match=prefix + "*")]
        assert len(keys) == 1
        assert "zoe" not in keys[0]
        assert 0 < await redis.pttl(keys[0]) <= 60_000
    finally:
        await other.aclose()


async def test_servers_sharing_redis_share_login_limits(server_factory: ServerFactory, redis_url: str) -> None:
    one = await server_factory(redis_url=redis_url, login_attempts_per_minute=2)
    two = await server_factory(redis_url=redis_url, login_attempts_per_minute=2)
    email = f"shared-{uuid.uuid4().hex[:8]}@example.com"
    body = {"email": email, "password": "wrong-password"}
    # A loopback address of its own, so that other tests on this Redis do not share the per-address window.
    address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(timeout=30, transport=transport) as client:
        assert (await client.post(one.url + "/api/v1/auth/login", json=body)).status_code == 401
        assert (await client.post(two.url + "/api/v1/auth/login", json=body)).status_code == 401
        limited = await client.post(one.url + "/api/v1/auth/login", json=body)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1


async def test_record_counts_every_hit_in_the_window(limiter: RateLimiter) -> None:
    assert [await limiter.record("k", window_s=0.5) for _ in range(4)] == [1, 2, 3, 4]
    assert await limiter.record("other", window_s=0.5) == 1
    await asyncio.sleep(0.6)
    assert await limiter.record("k", window_s=0.5) == 1
