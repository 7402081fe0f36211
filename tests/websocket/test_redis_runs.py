"""`RedisRunBuffers` against a real Redis: replay by seq, the session check, retention, the cap, and TTLs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from chinwag.websocket.bus import Envelope
from chinwag.websocket.redis_bus import RedisBus
from chinwag.websocket.redis_runs import RUNNING_TTL_S, RedisRunBuffers
from chinwag.websocket.runs import RunChannel


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"chinwag-test-{uuid.uuid4().hex[:12]}:"


async def test_frames_read_back_after_a_seq_in_batches(redis: Redis, prefix: str) -> None:
    buffers = RedisRunBuffers(redis, prefix=prefix)
    await buffers.open("r1", "s1")
    assert await buffers.last_seq("r1") == 0
    assert await buffers.read_after("r1", session_id="s1", after_seq=0, limit=10) == []
    for seq in range(1, 8):
        await buffers.append("r1", seq, f'{{"seq":{seq},"text":"é\\n"}}')
    assert await buffers.last_seq("r1") == 7
    assert await buffers.read_after("r1", session_id="s1", after_seq=0, limit=3) == [
        (1, '{"seq":1,"text":"é\\n"}'),
        (2, '{"seq":2,"text":"é\\n"}'),
        (3, '{"seq":3,"text":"é\\n"}'),
    ]
    tail = await buffers.read_after("r1", session_id="s1", after_seq=5, limit=10)
    assert [seq for seq, _ in tail or []] == [6, 7]
    assert await buffers.read_after("r1", session_id="s1", after_seq=7, limit=10) == []
    assert await buffers.read_after("r1", session_id="s1", after_seq=-3, limit=1) == [(1, '{"seq":1,"text":"é\\n"}')]


async def test_unknown_run_or_another_session_is_none(redis: Redis, prefix: str) -> None:
    buffers = RedisRunBuffers(redis, prefix=prefix)
    await buffers.open("r1", "s1")
    await buffers.append("r1", 1, "a")
    assert await buffers.read_after("r1", session_id="s2", after_seq=0, limit=10) is None
    assert await buffers.read_after("nope", session_id="s1", after_seq=0, limit=10) is None
    assert await buffers.last_seq("nope") is None


async def test_a_seq_appended_twice_is_refused(redis: Redis, prefix: str) -> None:
    buffers = RedisRunBuffers(redis, prefix=prefix)
    await buffers.open("r1", "s1")
    await buffers.append("r1", 1, "a")
    with pytest.raises(Exception, match="equal or smaller"):
        await buffers.append("r1", 1, "again")


async def test_kept_retention_s_after_end_then_gone(redis: Redis, prefix: str) -> None:
    buffers = RedisRunBuffers(redis, prefix=prefix, retention_s=1)
    await buffers.open("r1", "s1")
    await buffers.append("r1", 1, "a")
    assert await redis.ttl(f"{prefix}run:r1") > RUNNING_TTL_S - 10  # a crashed run does not stay forever
    assert await redis.ttl(f"{prefix}runmeta:r1") > RUNNING_TTL_S - 10
    await buffers.end("r1")
    assert await buffers.read_after("r1", session_id="s1", after_seq=0, limit=10) == [(1, "a")]
    assert 0 < await redis.ttl(f"{prefix}run:r1") <= 1
    async with asyncio.timeout(5):
        while await buffers.last_seq("r1") is not None:
            await asyncio.sleep(0.1)
    assert await buffers.read_after("r1", session_id="s1", after_seq=0, limit=10) is None


async def test_capped_and_a_resume_from_before_the_cap_is_unavailable_not_a_gap(redis: Redis, prefix: str) -> None:
    buffers = RedisRunBuffers(redis, prefix=prefix, max_events=10)
    await buffers.open("r1", "s1")
    for seq in range(1, 2001):
        await buffers.append("r1", seq, str(seq))
    assert await redis.xlen(f"{prefix}run:r1") < 2000  # trimmed (approximately: Redis trims whole nodes)
    assert await buffers.last_seq("r1") == 2000
    assert await buffers.read_after("r1", session_id="s1", after_seq=0, limit=10) is None
    assert await buffers.read_after("r1", session_id="s1", after_seq=1998, limit=10) == [(1999, "1999"), (2000, "2000")]


async def test_a_channel_on_redis_buffers_before_it_publishes(redis: Redis, prefix: str) -> None:
    async with RedisBus.open(redis, prefix=prefix) as bus:
        buffers = RedisRunBuffers(redis, prefix=prefix)
        in_buffer: list[int | None] = []
        got: list[Envelope] = []

        def on_event(envelope: Envelope) -> None:
            got.append(envelope)

        await bus.subscribe("s1", on_event)
        await buffers.open("r1", "s1")
        channel = RunChannel(run_id="r1", session_id="s1", buffers=buffers, bus=bus)
        for _ in range(5):
            await channel.emit_text("x")
            in_buffer.append(await buffers.last_seq("r1"))
        async with asyncio.timeout(3):
            while len(got) < 5:
                await asyncio.sleep(0.01)
        assert [e.seq for e in got] == [1, 2, 3, 4, 5]
        assert in_buffer == [1, 2, 3, 4, 5]
