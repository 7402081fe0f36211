"""`RedisBus` against a real Redis: live subscriptions, order, interrupts, two processes' worth of buses, and a
reconnect after the subscriber connection is killed."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from chinwag.websocket.bus import Envelope
from chinwag.websocket.redis_bus import RedisBus


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, client_name=f"chinwag-test-{uuid.uuid4().hex[:8]}")
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"chinwag-test-{uuid.uuid4().hex[:12]}:"


@contextlib.asynccontextmanager
async def two_buses(redis: Redis, prefix: str) -> AsyncIterator[tuple[RedisBus, RedisBus]]:
    async with RedisBus.open(redis, prefix=prefix) as a, RedisBus.open(redis, prefix=prefix) as b:
        yield a, b


async def wait_for(condition: object, timeout: float = 3.0) -> None:
    assert callable(condition)
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def test_a_subscription_is_live_when_subscribe_returns_and_order_is_kept(redis: Redis, prefix: str) -> None:
    async with two_buses(redis, prefix) as (a, b):
        got: list[Envelope] = []
        await b.subscribe("s1", got.append)
        # Published by the other bus right after subscribe returned: nothing is missed, and order holds.
        for seq in range(1, 201):
            await a.publish(Envelope(session_id="s1", frame=f'{{"n":{seq}}}\n', run_id="r1", seq=seq))
        await a.publish(Envelope(session_id="s1", frame='{"type":"session_updated"}'))
        await wait_for(lambda: len(got) == 201)
        assert [e.seq for e in got[:200]] == list(range(1, 201))
        assert got[0] == Envelope(session_id="s1", frame='{"n":1}\n', run_id="r1", seq=1)
        assert got[200] == Envelope(session_id="s1", frame='{"type":"session_updated"}', run_id=None, seq=0)


async def test_sessions_are_apart_and_unsubscribe_stops_delivery(redis: Redis, prefix: str) -> None:
    async with two_buses(redis, prefix) as (a, b):
        one: list[str] = []
        two: list[str] = []
        other: list[str] = []
        off_one = await b.subscribe("s1", lambda e: one.append(e.frame))
        await b.subscribe("s1", lambda e: two.append(e.frame))
        await b.subscribe("s2", lambda e: other.append(e.frame))
        await a.publish(Envelope(session_id="s1", frame="x"))
        await wait_for(lambda: len(one) == 1 and len(two) == 1)
        await off_one()
        await off_one()
        await a.publish(Envelope(session_id="s1", frame="y"))
        await wait_for(lambda: len(two) == 2)
        assert one == ["x"]
        assert other == []
        assert b.subscriber_count("s1") == 1


async def test_a_failing_handler_does_not_stop_the_others(redis: Redis, prefix: str) -> None:
    async with RedisBus.open(redis, prefix=prefix) as bus:
        got: list[str] = []

        def broken(envelope: Envelope) -> None:
            raise RuntimeError("boom")

        await bus.subscribe("s", broken)
        await bus.subscribe("s", lambda e: got.append(e.frame))
        await bus.publish(Envelope(session_id="s", frame="a"))
        await bus.publish(Envelope(session_id="s", frame="b"))
        await wait_for(lambda: got == ["a", "b"])


async def test_interrupts_reach_the_other_bus_for_that_session_only(redis: Redis, prefix: str) -> None:
    async with two_buses(redis, prefix) as (a, b):
        got: list[str] = []
        events: list[Envelope] = []
        off = await b.on_interrupt("s1", got.append)
        await b.subscribe("s1", events.append)
        await a.interrupt("s2", "r2")
        await a.interrupt("s1", "r1")
        await wait_for(lambda: got == ["r1"])
        await off()
        assert b.subscriber_count("s1") == 1
        await a.interrupt("s1", "r3")
        await a.publish(Envelope(session_id="s1", frame="after"))
        await wait_for(lambda: len(events) == 1)
        assert got == ["r1"]
        assert events[0].frame == "after"


async def test_the_last_leave_unsubscribes_in_redis(redis: Redis, prefix: str) -> None:
    async with RedisBus.open(redis, prefix=prefix) as bus:
        channel = f"{prefix}ev:s1"
        offs = [await bus.subscribe("s1", lambda e: None) for _ in range(3)]
        assert (await redis.pubsub_numsub(channel))[0][1] == 1  # one connection, however many handlers
        for off in offs:
            await off()
        await wait_for_numsub(redis, channel, 0)


async def wait_for_numsub(redis: Redis, channel: str, n: int) -> None:
    async with asyncio.timeout(3):
        while (await redis.pubsub_numsub(channel))[0][1] != n:
            await asyncio.sleep(0.01)


async def test_concurrent_subscribes_and_leaves_end_consistent(redis: Redis, prefix: str) -> None:
    async with two_buses(redis, prefix) as (a, b):
        got: list[str] = []
        offs = await asyncio.gather(*(b.subscribe("s", lambda e: got.append(e.frame)) for _ in range(10)))
        await asyncio.gather(*(off() for off in offs[:9]))
        await a.publish(Envelope(session_id="s", frame="z"))
        await wait_for(lambda: got == ["z"])
        await offs[9]()
        await wait_for_numsub(redis, f"{prefix}ev:s", 0)


async def test_reconnects_after_the_subscriber_connection_is_killed(redis: Redis, prefix: str) -> None:
    async with two_buses(redis, prefix) as (a, b):
        got: list[str] = []
        await b.subscribe("s", lambda e: got.append(e.frame))
        name = (await redis.client_getname()) or b""
        name = name.decode() if isinstance(name, bytes) else name
        subscribers = [
            c for c in await redis.client_list(_type="pubsub") if c.get("name") == name and int(c.get("sub", 0)) > 0
        ]
        assert len(subscribers) == 1  # bus b's; bus a subscribes nothing
        await redis.client_kill_filter(_id=subscribers[0]["id"])
        # Published until the reconnected subscriber gets one: the bus resubscribed by itself.
        async with asyncio.timeout(10):
            while not got:
                await a.publish(Envelope(session_id="s", frame="again"))
                await asyncio.sleep(0.05)
        assert set(got) == {"again"}


async def test_open_fails_when_redis_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = Redis.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        with pytest.raises(RedisConnectionError):
            async with RedisBus.open(client):
                pass
    finally:
        await client.aclose()


async def test_a_malformed_message_is_logged_and_the_next_ones_still_arrive(redis: Redis, prefix: str) -> None:
    async with RedisBus.open(redis, prefix=prefix) as bus:
        got: list[str] = []
        await bus.subscribe("s", lambda e: got.append(e.frame))
        await redis.publish(f"{prefix}ev:s", b"\xff\xfe not an envelope")
        await bus.publish(Envelope(session_id="s", frame="fine"))
        await wait_for(lambda: got == ["fine"])
