"""`RedisBus`: the `Bus` for several workers or hosts, on Redis pub/sub.

Each session has two channels: `<prefix>ev:<session_id>` (envelopes for its sockets) and `<prefix>int:<session_id>`
(interrupts, the run id as payload). A process holds ONE pub/sub connection, whatever the number of sockets and
runs: the first local handler of a channel subscribes it, the last one to leave unsubscribes it. One reader task
(started and stopped by `RedisBus.open`, i.e. by the lifespan) reads that connection and calls the handlers in the
order Redis delivers, which is publish order for each session (a run publishes its events one after the other).

`subscribe` and `on_interrupt` return once Redis has confirmed the subscription, so nothing published afterwards is
missed. When the connection breaks, the reader logs it, waits a little (backing off up to 5 s) and reconnects;
redis-py then subscribes again to every channel. What was published while the connection was down is lost to this
process's sockets: clients catch up with `resume` (the run buffers are in Redis streams, not on this connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from chinwag.websocket.bus import Envelope, EventHandler, InterruptHandler, Unsubscribe

logger = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT_S = 5.0
"""How long `subscribe` waits for Redis to confirm a subscription before it fails."""
_POLL_S = 1.0
_BACKOFF_MAX_S = 5.0

H = TypeVar("H", EventHandler, InterruptHandler)


@dataclass
class _Channel(Generic[H]):
    handlers: list[H] = field(default_factory=list)
    subscribed: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def encode_envelope(envelope: Envelope) -> bytes:
    """`run_id`, `seq` and the frame on three "lines" (the frame is JSON: it may hold anything after them)."""
    return f"{envelope.run_id or ''}\n{envelope.seq}\n{envelope.frame}".encode()


def decode_envelope(session_id: str, data: bytes) -> Envelope:
    run_id, seq, frame = data.decode().split("\n", 2)
    return Envelope(session_id=session_id, frame=frame, run_id=run_id or None, seq=int(seq))


class RedisBus:
    """`Bus` over Redis pub/sub: one subscriber connection and one reader task per process. Use `RedisBus.open`."""

    def __init__(self, redis: Redis, *, prefix: str = "chinwag:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._pubsub: PubSub = redis.pubsub()
        self._events: dict[str, _Channel[EventHandler]] = {}
        self._interrupts: dict[str, _Channel[InterruptHandler]] = {}
        self._confirming: dict[str, list[asyncio.Future[None]]] = {}
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, redis: Redis, *, prefix: str = "chinwag:") -> AsyncIterator[RedisBus]:
        """Connect the subscriber connection (fails when Redis is unreachable) and run the reader until the end."""
        bus = cls(redis, prefix=prefix)
        async with bus._pubsub:  # closes the connection at the end
            await bus._pubsub.ping()  # connects it (its PONG reaches the reader, which ignores it)
            bus._reader = asyncio.create_task(bus._read_forever(), name="redis-bus-reader")
            try:
                yield bus
            finally:
                bus._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await bus._reader

    def _event_channel(self, session_id: str) -> str:
        return f"{self._prefix}ev:{session_id}"

    def _interrupt_channel(self, session_id: str) -> str:
        return f"{self._prefix}int:{session_id}"

    # --- Bus

    async def publish(self, envelope: Envelope) -> None:
        await self._redis.publish(self._event_channel(envelope.session_id), encode_envelope(envelope))

    async def subscribe(self, session_id: str, handler: EventHandler) -> Unsubscribe:
        return await self._add(self._events, self._event_channel(session_id), handler)

    async def interrupt(self, session_id: str, run_id: str) -> None:
        await self._redis.publish(self._interrupt_channel(session_id), run_id.encode())

    async def on_interrupt(self, session_id: str, handler: InterruptHandler) -> Unsubscribe:
        return await self._add(self._interrupts, self._interrupt_channel(session_id), handler)

    def subscriber_count(self, session_id: str) -> int:
        """Local handlers of the session (events and interrupts): what this process listens to."""
        events = self._events.get(self._event_channel(session_id))
        interrupts = self._interrupts.get(self._interrupt_channel(session_id))
        return len(events.handlers if events else ()) + len(interrupts.handlers if interrupts else ())

    # --- subscriptions

    async def _add(self, table: dict[str, _Channel[H]], channel: str, handler: H) -> Unsubscribe:
        entry = table.setdefault(channel, _Channel())
        entry.handlers.append(handler)
        try:
            async with entry.lock:
                if not entry.subscribed:
                    await self._subscribe_live(channel)
                    entry.subscribed = True
        except BaseException:
            await self._discard(table, channel, entry, handler)
            raise

        async def remove() -> None:
            await self._discard(table, channel, entry, handler)

        return remove

    async def _discard(self, table: dict[str, _Channel[H]], channel: str, entry: _Channel[H], handler: H) -> None:
        with contextlib.suppress(ValueError):
            entry.handlers.remove(handler)
        async with entry.lock:
            if entry.handlers:
                return
            if table.get(channel) is entry:
                del table[channel]
            if entry.subscribed:
                entry.subscribed = False
                try:
                    await self._pubsub.unsubscribe(channel)
                except (RedisError, OSError) as exc:
                    # Its messages find no handler and are dropped; a reconnect forgets it.
                    logger.warning("redis bus: could not unsubscribe %s: %s", channel, exc)

    async def _subscribe_live(self, channel: str) -> None:
        """SUBSCRIBE, and wait until the reader sees Redis confirm it."""
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._confirming.setdefault(channel, [])
        waiters.append(confirmed)
        try:
            await self._pubsub.subscribe(channel)
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                await confirmed
        finally:
            with contextlib.suppress(ValueError):
                waiters.remove(confirmed)
            if not waiters and self._confirming.get(channel) is waiters:
                del self._confirming[channel]

    # --- the reader

    async def _read_forever(self) -> None:
        delay = 0.1
        while True:
            try:
                message = await self._pubsub.get_message(timeout=_POLL_S)
            except (RedisError, OSError) as exc:
                logger.warning("redis bus: connection lost (%s); reconnecting in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)
                continue
            if delay > 0.1:
                logger.info("redis bus: connected again")
                delay = 0.1
            if message is not None:
                try:
                    self._dispatch(message)
                except Exception:  # never let one odd message stop every socket of this process
                    logger.exception("redis bus: could not dispatch a message")

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        if kind == "subscribe":
            for waiter in self._confirming.get(channel, ()):
                if not waiter.done():
                    waiter.set_result(None)
            return
        if kind != "message":
            return
        data: bytes = message["data"]
        if (events := self._events.get(channel)) is not None:
            session_id = channel.removeprefix(f"{self._prefix}ev:")
            envelope = decode_envelope(session_id, data)
            for on_event in tuple(events.handlers):
                self._call(on_event, envelope, session_id)
        elif (interrupts := self._interrupts.get(channel)) is not None:
            session_id = channel.removeprefix(f"{self._prefix}int:")
            run_id = data.decode()
            for on_interrupt in tuple(interrupts.handlers):
                self._call(on_interrupt, run_id, session_id)

    @staticmethod
    def _call(handler: Any, argument: Any, session_id: str) -> None:
        try:
            handler(argument)
        except Exception:
            logger.exception("bus handler failed for session %s", session_id)
