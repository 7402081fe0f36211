"""Rate limiting behind a small seam: sliding windows keyed by strings ("login:addr:1.2.3.4")."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol


class RateLimiter(Protocol):
    """Counts hits per key in a sliding window. One instance per app, owned by the lifespan."""

    async def acquire(self, key: str, *, limit: int, window_s: float) -> float:
        """Record one hit and return 0, or, when `limit` hits are already in the window, record nothing and
        return the seconds until one leaves it."""
        ...

    async def release(self, key: str) -> None:
        """Take back the latest hit of `key` (an attempt that turned out not to count)."""
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

    def _sweep(self, now: float) -> None:
        stale = [k for k, h in self._hits.items() if not h or h[-1] <= now - self._windows.get(k, 0.0)]
        for key in stale:
            del self._hits[key]
            self._windows.pop(key, None)


def retry_after_seconds(wait: float) -> int:
    """The `Retry-After` value for a wait: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait))
