"""`RedisRunBuffers`: the `RunBuffers` for several workers or hosts, on Redis streams.

Per run, two keys:
- `<prefix>run:<run_id>`: a stream of the run's frames, entry id `0-<seq>` (so `XRANGE` reads "after seq N"
  directly), one field `f` holding the frame. Capped at about `MAX_EVENTS` entries (`XADD MAXLEN ~`): a resume from
  before what was trimmed is answered `None` (`resume_unavailable`), never with a gap.
- `<prefix>runmeta:<run_id>`: a hash `{session_id}`, the session check of `read_after`.

Both live `RUNNING_TTL_S` while the run goes (refreshed every `REFRESH_EVERY` events, so that a run whose process
crashed does not leak), and `retention_s` after `end`.
"""

from __future__ import annotations

import math

from redis.asyncio import Redis

from chinwag.websocket.runs import RUN_RETENTION_S

MAX_EVENTS = 100_000
RUNNING_TTL_S = 6 * 3600
REFRESH_EVERY = 500


class RedisRunBuffers:
    """`RunBuffers` in Redis streams, shared by every worker (see the module docstring for the keys)."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "chinwag:",
        retention_s: float = RUN_RETENTION_S,
        max_events: int = MAX_EVENTS,
        running_ttl_s: int = RUNNING_TTL_S,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self.retention_s = retention_s
        self._max_events = max_events
        self._running_ttl_s = running_ttl_s

    def _stream(self, run_id: str) -> str:
        return f"{self._prefix}run:{run_id}"

    def _meta(self, run_id: str) -> str:
        return f"{self._prefix}runmeta:{run_id}"

    async def open(self, run_id: str, session_id: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(self._meta(run_id), "session_id", session_id)
            pipe.expire(self._meta(run_id), self._running_ttl_s)
            await pipe.execute()

    async def append(self, run_id: str, seq: int, frame: str) -> None:
        stream = self._stream(run_id)
        if seq % REFRESH_EVERY != 1:
            await self._redis.xadd(stream, {"f": frame}, id=f"0-{seq}", maxlen=self._max_events, approximate=True)
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(stream, {"f": frame}, id=f"0-{seq}", maxlen=self._max_events, approximate=True)
            pipe.expire(stream, self._running_ttl_s)
            pipe.expire(self._meta(run_id), self._running_ttl_s)
            await pipe.execute()

    async def end(self, run_id: str) -> None:
        keep = max(1, math.ceil(self.retention_s))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.expire(self._stream(run_id), keep)
            pipe.expire(self._meta(run_id), keep)
            await pipe.execute()

    async def read_after(
        self, run_id: str, *, session_id: str, after_seq: int, limit: int
    ) -> list[tuple[int, str]] | None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(self._meta(run_id), "session_id")
            pipe.xrange(self._stream(run_id), min=f"0-{max(after_seq, 0) + 1}", max="+", count=limit)
            owner, entries = await pipe.execute()
        if owner is None or _text(owner) != session_id:
            return None
        frames = [(_seq(entry_id), _text(fields[b"f"])) for entry_id, fields in entries]
        if frames and frames[0][0] > max(after_seq, 0) + 1:
            return None  # trimmed past the cap: the client reads the history over REST
        return frames

    async def last_seq(self, run_id: str) -> int | None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(self._meta(run_id))
            pipe.xrevrange(self._stream(run_id), max="+", min="-", count=1)
            exists, last = await pipe.execute()
        if not exists:
            return None
        return _seq(last[0][0]) if last else 0


def _seq(entry_id: bytes | str) -> int:
    return int(_text(entry_id).partition("-")[2])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
