"""A scripted OpenAI-compatible HTTP server for tests and benchmarks.

In a test (in the test's own event loop)::

    async with FakeOpenAI.start(say("Hello world"), call("get_weather", {"city": "Paris"})) as fake:
        client = AsyncOpenAI(base_url=fake.base_url, api_key="x")
        ...
        assert fake.requests[0].body["model"] == "gpt-4o"

Out of process (benchmarks): ``python -m tests.fakes.openai_server --port 9100 [--default '{"text": "..."}']``,
scripted over HTTP: ``POST /_control/script`` (a JSON list of replies, appended to the queue), ``PUT
/_control/default`` (a reply, or null), ``GET /_control/requests``, ``POST /_control/reset``.

It answers ``POST .../chat/completions`` and ``POST .../responses`` under any prefix (``/v1``, Azure's
``/openai/deployments/NAME``), streamed or not. Each request takes the next scripted reply, else the default reply,
else gets a 500 saying the script ran out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import socket
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.fakes.openai_script import RecordedRequest, Reply, split_tokens
from tests.fakes.openai_wire import (
    Answer,
    Wire,
    chat_completion,
    chat_stream,
    chat_stream_error,
    error_body,
    response_object,
    responses_failed,
    responses_stream,
)

__all__ = ["FakeOpenAI"]

RECORDED = Path(__file__).parent / "recorded"
"""SSE bodies recorded from real servers (`Reply(recorded="chat_tool_call.sse")` replays one)."""
_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
_JSON_HEADERS = [(b"content-type", b"application/json")]
_SHORT_PAUSE = 0.2


class _Abort(Exception):
    """Ends a response on purpose (a scripted drop, or the server closing): uvicorn closes the connection."""


class _QuietAborts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _Abort))


_uvicorn_errors = logging.getLogger("uvicorn.error")
if not any(isinstance(f, _QuietAborts) for f in _uvicorn_errors.filters):
    _uvicorn_errors.addFilter(_QuietAborts())


class FakeOpenAI:
    """The fake model server: an ASGI app holding the script (a queue of `Reply`) and every request received."""

    def __init__(self, *replies: Reply, default: Reply | None = None) -> None:
        self.requests: list[RecordedRequest] = []
        self.default = default
        self.base_url = ""
        self._queue: deque[Reply] = deque(replies)
        self._ids = itertools.count(1)
        self._stops: set[asyncio.Event] = set()
        self._control = Starlette(
            routes=[
                Route("/_control/script", self._control_script, methods=["POST"]),
                Route("/_control/default", self._control_default, methods=["PUT", "POST"]),
                Route("/_control/requests", self._control_requests, methods=["GET"]),
                Route("/_control/reset", self._control_reset, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    # The script -------------------------------------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue replies, consumed one per model request in order."""
        self._queue.extend(replies)

    @property
    def remaining(self) -> int:
        """Scripted replies not yet consumed."""
        return len(self._queue)

    def reset(self) -> None:
        """Forget the script, the default reply and the recorded requests."""
        self._queue.clear()
        self.requests.clear()
        self.default = None

    @property
    def active(self) -> int:
        """Answers being sent right now (a client that went away or an interrupted run brings this back down)."""
        return len(self._stops)

    @property
    def last_request(self) -> RecordedRequest:
        return self.requests[-1]

    async def wait_for_requests(self, count: int = 1, *, timeout: float = 5.0) -> RecordedRequest:
        """Wait until `count` model requests have arrived; returns the `count`-th."""
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                await asyncio.sleep(0.005)
        return self.requests[count - 1]

    # Serving ----------------------------------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls, *replies: Reply, default: Reply | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> AsyncIterator[FakeOpenAI]:
        """Serve a new fake on a loopback port (a free one by default) in the running event loop."""
        fake = cls(*replies, default=default)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        bound_port = sock.getsockname()[1]
        config = uvicorn.Config(fake, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=2)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("fake OpenAI server stopped during start-up")
                await asyncio.sleep(0.005)
            fake.base_url = f"http://{host}:{bound_port}/v1"
            yield fake
        finally:
            fake.abort_streams()
            server.should_exit = True
            await task
            sock.close()

    def abort_streams(self) -> None:
        """End every answer in progress now (stalls and paced streams included)."""
        for stop in self._stops:
            stop.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and scope["method"] == "POST":
            if path.endswith("/chat/completions"):
                await self._answer(scope, receive, send, api="chat")
                return
            if path.endswith("/responses"):
                await self._answer(scope, receive, send, api="responses")
                return
        await self._control(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, *, api: str) -> None:
        raw = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            raw += message.get("body", b"")
            if not message.get("more_body", False):
                break
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await _send_json(send, 400, error_body(400, "request body is not JSON"))
            return
        if not isinstance(body, dict):
            await _send_json(send, 400, error_body(400, "request body is not a JSON object"))
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode("latin-1")
        client = scope.get("client")
        request = RecordedRequest(
            path=scope["path"], body=body, headers=headers, query=query, client_port=client[1] if client else None
        )
        self.requests.append(request)
        if api == "responses" and (problem := _untyped_input_item(body.get("input"))) is not None:
            await _send_json(send, 400, error_body(400, problem))
            return
        reply = self._queue.popleft() if self._queue else self.default
        if reply is None:
            await _send_json(send, 500, error_body(500, "fake OpenAI: no scripted reply left and no default reply"))
            return

        stop = asyncio.Event()
        self._stops.add(stop)
        watcher = asyncio.create_task(_watch_disconnect(receive, stop))
        try:
            # A scripted drop, a client gone or the server closing raise `_Abort`: uvicorn closes the connection.
            await self._play(send, stop, reply, request, api=api)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self._stops.discard(stop)

    async def _play(self, send: Send, stop: asyncio.Event, reply: Reply, request: RecordedRequest, *, api: str) -> None:
        await _pause(reply.stall_before, stop)
        if reply.status is not None:
            headers = list(_JSON_HEADERS)
            if reply.retry_after is not None:
                headers.append((b"retry-after", f"{reply.retry_after:g}".encode()))
            await _send_json(send, reply.status, error_body(reply.status, reply.error_message), headers)
            return
        if reply.recorded is not None:
            await self._play_recorded(send, stop, reply)
            return
        answer = self._make_answer(reply, request)
        body = request.body
        if not body.get("stream"):
            await self._play_whole(send, stop, reply, answer, body, api=api)
            return
        if api == "chat":
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            wire = chat_stream(answer, include_usage=include_usage)
        else:
            wire = responses_stream(answer, body)
        failure = b""
        if reply.error_after is not None:
            if api == "chat":
                failure = chat_stream_error(reply.error_message)
            else:
                sequence = wire.events_through(reply.error_after)
                failure = responses_failed(answer, body, sequence=sequence, message=reply.error_message)
        await self._play_stream(send, stop, reply, wire, failure)

    async def _play_recorded(self, send: Send, stop: asyncio.Event, reply: Reply) -> None:
        """A body recorded from a real server, sent event by event (`delay` before each), byte for byte."""
        assert reply.recorded is not None
        raw = (RECORDED / reply.recorded).read_bytes()
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        events = [e + b"\n\n" for e in raw.split(b"\n\n") if e.strip()]
        for event in events:
            if reply.delay > 0:
                await _pause(reply.delay, stop)
            elif stop.is_set():
                raise _Abort("stopped")
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _play_stream(self, send: Send, stop: asyncio.Event, reply: Reply, wire: Wire, failure: bytes) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        await send({"type": "http.response.body", "body": wire.head, "more_body": True})
        delay, stall_at, drop_after, error_after = reply.delay, reply.stall_at, reply.drop_after, reply.error_after
        for sent, chunk in enumerate(wire.chunks):
            if sent == stall_at:
                await _pause(reply.stall, stop)
            if sent == drop_after:
                raise _Abort("scripted drop")
            if sent == error_after:
                await send({"type": "http.response.body", "body": failure, "more_body": False})
                return
            if delay > 0:
                await _pause(delay, stop)
            elif stop.is_set():
                raise _Abort("stopped")
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        count = len(wire.chunks)
        if count == stall_at:
            await _pause(reply.stall, stop)
        if drop_after is not None and count >= drop_after:
            raise _Abort("scripted drop")
        if error_after is not None and count >= error_after:
            await send({"type": "http.response.body", "body": failure, "more_body": False})
            return
        await send({"type": "http.response.body", "body": wire.tail, "more_body": False})

    async def _play_whole(
        self, send: Send, stop: asyncio.Event, reply: Reply, answer: Answer, body: dict[str, Any], *, api: str
    ) -> None:
        if reply.error_after is not None:
            await _send_json(send, 500, error_body(500, reply.error_message or "The model failed."))
            return
        # Not streamed: the client waits as long as the model would take to generate it all.
        chunks = len(answer.reasoning) + len(answer.tokens) + len(answer.tool_calls)
        await _pause(reply.delay * chunks + (reply.stall if reply.stall_at is not None else 0.0), stop)
        payload = orjson.dumps(chat_completion(answer) if api == "chat" else response_object(answer, body, done=True))
        if reply.drop_after is not None:
            length = str(len(payload)).encode()
            await send(
                {"type": "http.response.start", "status": 200, "headers": [*_JSON_HEADERS, (b"content-length", length)]}
            )
            await send({"type": "http.response.body", "body": payload[: len(payload) // 2], "more_body": True})
            raise _Abort("scripted drop")
        await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    def _make_answer(self, reply: Reply, request: RecordedRequest) -> Answer:
        number = next(self._ids)
        text = request.last_user_text if reply.echo else reply.text
        tokens = split_tokens(text, reply.tokens)
        reasoning = split_tokens(reply.reasoning, None)
        tool_calls = []
        for i, tool_call in enumerate(reply.tool_calls):
            call_id = tool_call.call_id or f"call_fake{number}_{i}"
            tool_calls.append((f"fc_fake{number}_{i}", call_id, tool_call))
        body = request.body
        prompt = body.get("messages") if "messages" in body else [body.get("instructions"), body.get("input")]
        input_tokens = reply.input_tokens
        if input_tokens is None:
            input_tokens = max(1, len(orjson.dumps(prompt)) // 4)
        output_tokens = reply.output_tokens
        if output_tokens is None:
            output_tokens = len(tokens) + len(reasoning) + sum(max(1, len(c.arguments) // 4) for c in reply.tool_calls)
        return Answer(
            model=str(body.get("model", "fake-model")),
            response_id=f"chatcmpl-fake{number}" if "messages" in body else f"resp_fake{number}",
            message_id=f"msg_fake{number}",
            tokens=tokens,
            tool_calls=tool_calls,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            reasoning=reasoning,
            finish_reason=reply.finish_reason,
        )

    # Control API ------------------------------------------------------------------------------------------------

    async def _control_script(self, request: Request) -> Response:
        data = await _json_body(request)
        if not isinstance(data, list):
            return _bad_request("expected a JSON list of replies")
        try:
            replies = [Reply.from_json(item) for item in data]
        except (ValueError, TypeError, KeyError) as exc:
            return _bad_request(str(exc))
        self.script(*replies)
        return JSONResponse({"queued": self.remaining})

    async def _control_default(self, request: Request) -> Response:
        data = await _json_body(request)
        if data is _INVALID:
            return _bad_request("expected a reply as a JSON object, or null")
        try:
            self.default = None if data is None else Reply.from_json(data)
        except (ValueError, TypeError, KeyError) as exc:
            return _bad_request(str(exc))
        return JSONResponse({"default": None if self.default is None else self.default.to_json()})

    async def _control_requests(self, request: Request) -> Response:
        return Response(orjson.dumps([r.to_json() for r in self.requests]), media_type="application/json")

    async def _control_reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"reset": True})

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "fake"}]})


async def _pause(seconds: float, stop: asyncio.Event) -> None:
    """Sleep, ending early (with `_Abort`) when the client disconnects or the server closes."""
    if seconds > 0:
        if seconds <= _SHORT_PAUSE:
            await asyncio.sleep(seconds)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
    if stop.is_set():
        raise _Abort("stopped")


async def _watch_disconnect(receive: Receive, stop: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    stop.set()


def _untyped_input_item(items: Any) -> str | None:
    """What llama.cpp's `/v1/responses` refuses (and the OpenAI API docs never show): an assistant message without
    `"type": "message"`. The fake refuses it too, so a history that a real server would reject fails here first."""
    if not isinstance(items, list):
        return None
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("role") == "assistant" and item.get("type") != "message":
            return f"Cannot determine type of 'item' (input[{index}])"
    return None


async def _send_json(
    send: Send, status: int, payload: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or _JSON_HEADERS})
    await send({"type": "http.response.body", "body": orjson.dumps(payload), "more_body": False})


_INVALID = object()


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _INVALID


def _bad_request(detail: str) -> Response:
    return JSONResponse({"detail": detail, "code": "bad_request"}, status_code=400)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A scripted OpenAI-compatible server (tests and benchmarks).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--default", help='the default reply as JSON, e.g. \'{"text": "hi", "delay": 0.02}\'')
    args = parser.parse_args(argv)
    default = Reply.from_json(orjson.loads(args.default)) if args.default else None
    uvicorn.run(FakeOpenAI(default=default), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
