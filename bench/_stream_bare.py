"""The floors of the streaming bench, as a server of their own (uvicorn, the options `chinwag serve` uses).

- `/ws/push`: a bare Starlette WebSocket. On connect it sends a `ready` frame; each client text `N` (a number)
  makes it push N `text_delta` frames built like chinwag's hot path (f-string template + orjson of the delta), then a
  `done` frame. What one frame costs a WebSocket server with nothing else to do.
- `/ws/relay`: the Agents SDK plus that socket, no database: each client text is a user message, streamed through
  `Runner.run_streamed` (`OpenAIChatCompletionsModel`, the model server at `OPENAI_BASE_URL`) and relayed as
  `text_delta` frames, then an `assistant_end` frame. The least any SDK-based chat server does per token.

Run: ``python -m bench._stream_bare --port N [--deflate]``.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os

import orjson
import uvicorn
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    RawResponsesStreamEvent,
    RunConfig,
    Runner,
)
from openai import AsyncOpenAI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

_READY = '{"type":"ready","session_id":"bench","active_run":null}'
_DONE = '{"type":"done"}'
_run_ids = itertools.count(1)


def _text_delta(run_id: str, seq: int, delta: str) -> str:
    return f'{{"type":"text_delta","run_id":"{run_id}","seq":{seq},"delta":{orjson.dumps(delta).decode()}}}'


async def push(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(_READY)
    try:
        while True:
            count = int(await websocket.receive_text())
            run_id = f"run_bench{next(_run_ids):08d}"
            for seq in range(1, count + 1):
                await websocket.send_text(_text_delta(run_id, seq, " T1764140000000000"))
            await websocket.send_text(_DONE)
    except WebSocketDisconnect:
        return


def _agent() -> Agent[None]:
    client = AsyncOpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key=os.environ.get("OPENAI_API_KEY", "bench"))
    model: OpenAIChatCompletionsModel | OpenAIResponsesModel
    if os.environ.get("BENCH_LLM_API") == "responses":
        model = OpenAIResponsesModel(model="fake-model", openai_client=client)
    else:
        model = OpenAIChatCompletionsModel(model="fake-model", openai_client=client)
    return Agent(
        name="relay",
        instructions="You are a helpful assistant.",
        model=model,
        model_settings=ModelSettings(include_usage=True),
    )


_agents: list[Agent[None]] = []


async def relay(websocket: WebSocket) -> None:
    if not _agents:
        _agents.append(_agent())
    agent = _agents[0]
    await websocket.accept()
    await websocket.send_text(_READY)
    try:
        while True:
            content = await websocket.receive_text()
            run_id = f"run_bench{next(_run_ids):08d}"
            result = Runner.run_streamed(agent, content, run_config=RunConfig(tracing_disabled=True))
            seq = 0
            async for event in result.stream_events():
                if isinstance(event, RawResponsesStreamEvent) and event.data.type == "response.output_text.delta":
                    seq += 1
                    await websocket.send_text(_text_delta(run_id, seq, event.data.delta))
            end = {"type": "assistant_end", "run_id": run_id, "seq": seq + 1, "finish_reason": "stop"}
            await websocket.send_text(orjson.dumps(end).decode())
    except WebSocketDisconnect:
        return


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def collect(request: Request) -> Response:
    """A full collection, so that RSS readings do not count garbage."""
    gc.collect()
    return PlainTextResponse("ok")


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/gc", collect, methods=["POST"]),
        WebSocketRoute("/ws/push", push),
        WebSocketRoute("/ws/relay", relay),
    ]
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Floors of the streaming bench: bare WebSocket push, SDK relay.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate (chinwag does not)")
    args = parser.parse_args(argv)
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        backlog=4096,
        ws_max_size=1024 * 1024,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        ws_per_message_deflate=args.deflate,
    )


if __name__ == "__main__":
    main()
