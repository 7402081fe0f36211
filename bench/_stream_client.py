"""The bench's chat clients: a WebSocket per session, one message, every frame of the answer timed on arrival."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from websockets.asyncio.client import ClientConnection, connect

from bench._stream_fake import parse_stamp

Protocol = Literal["chinwag", "relay"]


@dataclass
class Delivered:
    """One answer as a client received it."""

    sent_us: int = 0
    deltas: int = 0
    lags_us: list[int] = field(default_factory=list)  # receive time minus the fake's send time, per text_delta
    received_us: list[int] = field(default_factory=list)  # the receive time of each of those
    ended_us: int = 0  # when `assistant_end` arrived
    first_lag_us: int | None = None
    frame_sizes: list[tuple[int, int]] = field(default_factory=list)  # (seq, frame length) when asked for
    finish_reason: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.finish_reason == "stop" and not self.errors


async def open_socket(url: str, *, compression: str | None = None, timeout: float = 30.0) -> ClientConnection:
    """Connect and wait for `ready` (both chinwag and the floors send one first)."""
    ws = await connect(url, compression=compression, max_size=2**24, open_timeout=timeout, ping_interval=None)
    async with asyncio.timeout(timeout):
        first = orjson.loads(await ws.recv())
    if first.get("type") != "ready":
        await ws.close()
        raise RuntimeError(f"expected a ready frame, got {first!r}")
    return ws


async def send_message(
    ws: ClientConnection,
    content: str,
    *,
    protocol: Protocol,
    timeout: float,
    sizes: bool = False,
) -> Delivered:
    """Send one message and read its answer to the end (`assistant_end`), timing each `text_delta`."""
    got = Delivered()
    frame = orjson.dumps({"type": "message", "content": content}).decode() if protocol == "chinwag" else content
    got.sent_us = time.time_ns() // 1000
    await ws.send(frame)
    try:
        async with asyncio.timeout(timeout):
            while True:
                raw = await ws.recv()
                received_us = time.time_ns() // 1000
                event: dict[str, Any] = orjson.loads(raw)
                kind = event.get("type")
                if kind == "text_delta":
                    got.deltas += 1
                    stamp = parse_stamp(event["delta"])
                    if stamp is not None:
                        lag = received_us - stamp
                        if got.first_lag_us is None:
                            got.first_lag_us = lag
                        got.lags_us.append(lag)
                        got.received_us.append(received_us)
                    if sizes:
                        got.frame_sizes.append((int(event["seq"]), len(raw)))
                elif kind == "assistant_end":
                    got.ended_us = received_us
                    got.finish_reason = str(event.get("finish_reason"))
                    return got
                elif kind == "error":
                    got.errors.append(str(event.get("code")))
                    if event.get("run_id") is None and got.deltas == 0:
                        return got  # refused before any run started
    except TimeoutError:
        got.errors.append("timeout")
    return got
