"""Rate limiting behind a small seam: sliding windows keyed by strings ("login:addr:1.2.3.4")."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import math
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from redis.asyncio import Redis

from chinwag.config import Settings
from chinwag.errors import RateLimited


class RateLimiter(Protocol):
    """Counts hits per key in a sliding window. One instance per app, owned by the lifespan."""

    async def acquire(self, key: str, *, limit: int, window_s: float) -> float:
        """Record one hit and return 0, or, when `limit` hits are already in the window, record nothing and
        return the seconds until one leaves it."""
        ...

    async def release(self, key: str) -> None:
        """Take back the latest hit of `key` (an attempt that turned out not to count)."""
        ...

    async def record(self, key: str, *, window_s: float) -> int:
        """Record one hit whatever the count, and return how many hits the window holds now (this one included)."""
        ...


class InMemoryRateLimiter:
    """A sliding-window limiter for one process. Keys whose windows are empty are dropped now and then."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, sweep_every: int = 1000) -> None:
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._windows: dict[str, float] = {}
        self._sweep_every = sweep_every
        self._calls = 0

    async def acquire(self, key: str, *, limit: int, window_s: float) -> float:
        now = self._clock()
        self._calls += 1
        if self._calls % self._sweep_every == 0:
            self._sweep(now)
        hits = self._hits.setdefault(key, deque())
        self._windows[key] = window_s
        while hits and hits[0] <= now - window_s:
            hits.popleft()
        if len(hits) >= limit:
            return max(hits[0] + window_s - now, 0.001)
        hits.append(now)
        return 0.0

    async def release(self, key: str) -> None:
        hits = self._hits.get(key)
        if hits:
            hits.pop()

    async def record(self, key: str, *, window_s: float) -> int:
        now = self._clock()
        hits = self._hits.setdefault(key, deque())
        self._windows[key] = max(window_s, self._windows.get(key, 0.0))
        while hits and hits[0] <= now - window_s:
            hits.popleft()
        hits.append(now)
        return len(hits)

    def _sweep(self, now: float) -> None:
        stale = [k for k, h in self._hits.items() if not h or h[-1] <= now - self._windows.get(k, 0.0)]
        for key in stale:
            del self._hits[key]
            self._windows.pop(key, None)


# One sorted set per key: members are hits, scores their times (Redis's own clock, the same for every worker).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(tonumber(oldest[2]) + window - now, 1)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 0
"""

_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], window)
return redis.call('ZCARD', KEYS[1])
"""


class RedisRateLimiter:
    """The same sliding windows in Redis, shared by every worker and host. Keys are hashed: no email or address
    is stored in Redis."""

    def __init__(self, redis: Redis, *, prefix: str = "chinwag:rl:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._acquire = redis.register_script(_ACQUIRE)
        self._record = redis.register_script(_RECORD)

    def _key(self, key: str) -> str:
        return self._prefix + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    async def acquire(self, key: str, *, limit: int, window_s: float) -> float:
        member = secrets.token_hex(8)
        wait_ms = await self._acquire(keys=[self._key(key)], args=[max(1, int(window_s * 1000)), limit, member])
        return int(wait_ms) / 1000

    async def release(self, key: str) -> None:
        await self._redis.zpopmax(self._key(key))

    async def record(self, key: str, *, window_s: float) -> int:
        member = secrets.token_hex(8)
        count = await self._record(keys=[self._key(key)], args=[max(1, int(window_s * 1000)), member])
        return int(count)


class ConcurrencySlots:
    """At most `limit` things at once per key (a user's searches, say), in this process. One per app, owned by
    the lifespan. Past the limit `hold` refuses at once (429) rather than queueing."""

    def __init__(self) -> None:
        self._held: collections.Counter[str] = collections.Counter()

    @contextlib.asynccontextmanager
    async def hold(self, key: str, *, limit: int, detail: str) -> AsyncIterator[None]:
        if self._held[key] >= limit:
            raise RateLimited(detail, retry_after=1)
        self._held[key] += 1
        try:
            yield
        finally:
            self._held[key] -= 1
            if self._held[key] <= 0:
                del self._held[key]


def make_rate_limiter(settings: Settings, redis: Redis | None) -> RateLimiter:
    """Redis-backed when the app has a Redis client (several workers share the counts), else in-process."""
    if redis is None:
        return InMemoryRateLimiter()
    return RedisRateLimiter(redis, prefix=f"{settings.redis_prefix}rl:")


def retry_after_seconds(wait: float) -> int:
    """The `Retry-After` value for a wait: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait))
