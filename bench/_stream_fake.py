"""The fake model server of the streaming bench: `tests.fakes.openai_server.FakeOpenAI`, with send times stamped.

A token of the scripted text that reads `T` followed by sixteen zeros is rewritten, as its SSE chunk goes out, to
`T` and the wall-clock time of that send in microseconds (same width, so nothing else changes). Clients on the same
machine subtract it from their receive time: that is the token's lag. Each model request's arrival time is recorded
too (`GET /_bench/arrivals`), so the bench can see how long a chat message takes to reach the model.

Run: ``python -m bench._stream_fake --port N``; the control API of `FakeOpenAI` is unchanged.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson
import uvicorn
from starlette.types import Message, Receive, Scope, Send

from tests.fakes.openai_server import FakeOpenAI

MARK = b"T" + b"0" * 16
TOKEN = " " + MARK.decode()  # one stamped token, leading space included (17 characters)


def stamped_text(tokens: int) -> str:
    """A reply text of `tokens` stamp placeholders; script it with `tokens=tokens` so each is one chunk."""
    return TOKEN * tokens


def parse_stamp(delta: str) -> int | None:
    """The send time (microseconds since the epoch) stamped in a delta, if it holds one."""
    at = delta.find("T")
    if at < 0 or len(delta) < at + 17:
        return None
    digits = delta[at + 1 : at + 17]
    return int(digits) if digits.isdigit() else None


class StampingApp:
    """ASGI wrapper: stamps tokens on their way out and records when each model request arrived."""

    def __init__(self, fake: FakeOpenAI) -> None:
        self.fake = fake
        self.arrivals: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.fake(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path == "/_bench/arrivals":
            await _send_json(send, self.arrivals)
            return
        if path == "/_bench/reset":
            self.arrivals.clear()
            await _send_json(send, {"reset": True})
            return
        if scope["method"] != "POST" or not path.endswith(("/chat/completions", "/responses")):
            await self.fake(scope, receive, send)
            return
        arrived_us = time.time_ns() // 1000
        body = bytearray()

        async def recording_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    self._record(arrived_us, bytes(body))
            return message

        async def stamping_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                chunk: bytes = message.get("body", b"")
                if MARK in chunk:
                    stamp = b"T%016d" % (time.time_ns() // 1000)
                    message = {**message, "body": chunk.replace(MARK, stamp)}
            await send(message)

        await self.fake(scope, recording_receive, stamping_send)

    def _record(self, arrived_us: int, raw: bytes) -> None:
        try:
            request = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(request, dict):
            return
        last_user = ""
        items = request.get("messages") or request.get("input") or []
        for item in reversed(items if isinstance(items, list) else []):
            if isinstance(item, dict) and item.get("role") == "user" and isinstance(item.get("content"), str):
                last_user = item["content"]
                break
        self.arrivals.append({"at_us": arrived_us, "stream": bool(request.get("stream")), "last_user": last_user[:200]})


async def _send_json(send: Send, payload: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": orjson.dumps(payload), "more_body": False})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The streaming bench's fake model server (stamped tokens).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(
        StampingApp(FakeOpenAI()),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
