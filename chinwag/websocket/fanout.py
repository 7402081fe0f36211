"""How a run's events reach sockets and its interrupts reach the run: within this process, or through Redis
(`CHINWAG_REDIS_URL`) so that several workers and hosts share them. The lifespan opens it once; the same Redis
client serves the rate limiter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import Redis

from chinwag.config import Settings
from chinwag.websocket.bus import Bus, InProcessBus
from chinwag.websocket.redis_bus import RedisBus
from chinwag.websocket.redis_runs import RedisRunBuffers
from chinwag.websocket.runs import MemoryRunBuffers, RunBuffers


@dataclass(frozen=True, slots=True)
class Fanout:
    bus: Bus
    buffers: RunBuffers
    redis: Redis | None
    """The app's one Redis client (None without `CHINWAG_REDIS_URL`)."""


@contextlib.asynccontextmanager
async def open_fanout(settings: Settings) -> AsyncIterator[Fanout]:
    """The bus and run buffers: Redis ones with `settings.redis_url` (fails at start when Redis is unreachable),
    else in this process's memory."""
    if not settings.redis_url:
        yield Fanout(bus=InProcessBus(), buffers=MemoryRunBuffers(), redis=None)
        return
    redis = Redis.from_url(settings.redis_url)
    try:
        async with RedisBus.open(redis, prefix=settings.redis_prefix) as bus:
            yield Fanout(bus=bus, buffers=RedisRunBuffers(redis, prefix=settings.redis_prefix), redis=redis)
    finally:
        await redis.aclose()
