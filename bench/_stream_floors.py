"""Floors of the streaming bench: the Agents SDK alone (in this process) and a bare WebSocket push (its own server)."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
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
from websockets.asyncio.client import ClientConnection

from bench._stream_client import open_socket
from bench._stream_common import Child
from bench._stream_fake import stamped_text


async def set_default_reply(fake_url: str, *, tokens: int, delay: float) -> None:
    """Every model request from now on gets `tokens` stamped tokens, `delay` seconds apart."""
    reply = {"text": stamped_text(tokens), "tokens": tokens, "delay": delay}
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.put(fake_url + "/_control/default", content=orjson.dumps(reply))
        response.raise_for_status()


async def sdk_cpu_per_delta(
    fake_url: str, *, streams: int, tokens: int, api: str = "chat_completions"
) -> tuple[float, int]:
    """CPU microseconds of this process per text delta, for `streams` concurrent `Runner.run_streamed` of `tokens`
    deltas each (the SDK's stock model of `api` over the fake): the floor of any server built on the SDK."""
    await set_default_reply(fake_url, tokens=tokens, delay=0.0)
    client = AsyncOpenAI(base_url=fake_url + "/v1", api_key="bench-placeholder")
    model: OpenAIChatCompletionsModel | OpenAIResponsesModel
    if api == "responses":
        model = OpenAIResponsesModel(model="fake-model", openai_client=client)
    else:
        model = OpenAIChatCompletionsModel(model="fake-model", openai_client=client)
    agent: Agent[None] = Agent(
        name="floor",
        instructions="You are a helpful assistant.",
        model=model,
        model_settings=ModelSettings(include_usage=True),
    )
    config = RunConfig(tracing_disabled=True)

    async def one() -> int:
        count = 0
        result = Runner.run_streamed(agent, "Tell me a long story.", run_config=config)
        async for event in result.stream_events():
            if isinstance(event, RawResponsesStreamEvent) and event.data.type == "response.output_text.delta":
                count += 1
        return count

    try:
        await one()  # warm-up: imports, the connection pool
        cpu0 = time.process_time()
        counts = await asyncio.gather(*(one() for _ in range(streams)))
        cpu = time.process_time() - cpu0
    finally:
        await client.close()
    deltas = sum(counts)
    return cpu / deltas * 1e6, deltas


async def push_cpu_per_frame(server: Child, *, sockets: int, frames: int) -> tuple[float, int]:
    """CPU microseconds of the bare WebSocket server per `text_delta` frame it pushes."""
    url = f"ws://127.0.0.1:{server.port}/ws/push"
    conns = [await open_socket(url) for _ in range(sockets)]

    async def drain(ws: ClientConnection) -> int:
        await ws.send(str(frames))
        count = 0
        while True:
            raw = await ws.recv()
            if raw == '{"type":"done"}':
                return count
            count += 1

    try:
        await asyncio.gather(*(drain(ws) for ws in conns))  # warm-up
        cpu0 = server.cpu_s()
        counts = await asyncio.gather(*(drain(ws) for ws in conns))
        cpu = server.cpu_s() - cpu0
    finally:
        for ws in conns:
            await ws.close()
    delivered = sum(counts)
    return cpu / delivered * 1e6, delivered
