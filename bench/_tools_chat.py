"""The tool-call round trip as a chat client sees it: `tool_start` to `tool_done` on the socket.

chinwag runs as `python -m chinwag serve` (its own process, a scratch database) with the test MCP server over stdio
and over streamable HTTP; the model is the fake OpenAI server, in this process, scripted to call `echo` and then
answer. Between the two events chinwag parses nothing from the model: the SDK runs the tool through the pool, the
output is capped and persisted, and `tool_done` goes out. `echo`'s own work is nil, so the time is all overhead.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import orjson
import websockets
from agents import Agent, OpenAIChatCompletionsModel, RunConfig, RunItemStreamEvent, Runner
from agents.mcp import MCPServer
from openai import AsyncOpenAI

from bench._stream_chinwag import _FOREIGN_SETTINGS, scratch_database, sign_in
from bench._stream_common import children, free_port
from tests.fakes.openai_script import call, say
from tests.fakes.openai_server import FakeOpenAI

MODEL = "fake-model"


async def chat_round_trips(
    *, http_url: str, fake_cmd: list[str], env: dict[str, str], calls: int
) -> dict[str, list[float]]:
    """Per transport, the milliseconds from receiving `tool_start` to receiving `tool_done` at the client."""
    times: dict[str, list[float]] = {"stdio": [], "http": []}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mcp.json"
        servers = {
            "stdio": {"command": fake_cmd[0], "args": fake_cmd[1:], "env": env, "pool_size": 1},
            "http": {"url": http_url},
        }
        config.write_text(json.dumps({"mcpServers": servers}))
        async with FakeOpenAI.start() as fake, scratch_database() as database_url:
            with children(Path(tmp)) as kids:
                port = free_port()
                server = kids.start(
                    "chinwag",
                    ["-m", "chinwag", "serve", "--port", str(port)],
                    port=port,
                    env={
                        "CHINWAG_DATABASE_URL": database_url,
                        "CHINWAG_DATA_DIR": str(Path(tmp) / "data"),
                        "CHINWAG_SECRET_KEY": "bench-" + "x" * 40,
                        "CHINWAG_REGISTRATION": "open",
                        "CHINWAG_MODELS": f"{MODEL}:128000",
                        "CHINWAG_MCP_CONFIG": str(config),
                        "OPENAI_BASE_URL": fake.base_url,
                        "OPENAI_API_KEY": "bench-placeholder",
                    },
                    unset=tuple(n for n in _FOREIGN_SETTINGS if n != "CHINWAG_MCP_CONFIG"),
                    ready_path="/health/ready",
                )
                api = await sign_in(server)
                for transport in ("stdio", "http"):
                    [session_id] = await api.create_sessions(1, mcp_servers=[transport])
                    async with websockets.connect(api.ws_url(session_id)) as ws:
                        await ws.recv()  # ready
                        for i in range(calls + 5):
                            fake.script(call("echo", {"text": f"ping {i}"}), say("ok"))
                            await ws.send(orjson.dumps({"type": "message", "content": f"echo {i}"}).decode())
                            started = 0.0
                            while True:
                                frame = orjson.loads(await ws.recv())
                                if frame["type"] == "tool_start":
                                    started = time.perf_counter()
                                elif frame["type"] == "tool_done":
                                    if not frame["ok"]:
                                        raise RuntimeError(f"tool call failed: {frame['output']}")
                                    if i >= 5:  # the first few warm up
                                        times[transport].append((time.perf_counter() - started) * 1000)
                                elif frame["type"] == "assistant_end":
                                    break
    return times


async def sdk_round_trips(server: MCPServer, *, calls: int) -> list[float]:
    """The floor of the `chat` rows: the Agents SDK alone (this process, no socket, no database) with the same
    fake model and MCP server, from its `tool_called` event to its `tool_output` event."""
    times: list[float] = []
    async with FakeOpenAI.start() as fake:
        client = AsyncOpenAI(base_url=fake.base_url, api_key="bench-placeholder")
        model = OpenAIChatCompletionsModel(model=MODEL, openai_client=client)
        agent: Agent[None] = Agent(name="floor", instructions="Use the tools.", model=model, mcp_servers=[server])
        try:
            for i in range(calls + 5):
                fake.script(call("echo", {"text": f"ping {i}"}), say("ok"))
                result = Runner.run_streamed(agent, f"echo {i}", run_config=RunConfig(tracing_disabled=True))
                started = 0.0
                async for event in result.stream_events():
                    if isinstance(event, RunItemStreamEvent) and event.name == "tool_called":
                        started = time.perf_counter()
                    elif isinstance(event, RunItemStreamEvent) and event.name == "tool_output" and i >= 5:
                        times.append((time.perf_counter() - started) * 1000)
        finally:
            await client.close()
    return times
