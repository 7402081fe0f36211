"""Tool-call round trip through the MCP pool, for a stdio and a streamable HTTP server.

The tool is the test server's `echo`, whose own work is nil, so each time is the round trip: request to result.
Three paths per transport, interleaved call by call so that drift on a shared machine hits them alike:

- `SDK direct`: the Agents SDK's own `MCPServerStdio` / `MCPServerStreamableHttp`, connected by this script; the floor.
- `pool`: `PooledServer.call_tool` on an acquired server (timeout, crash handling, output cap around the same call).
- `acquire+call`: a whole `pool.acquire([name])` block around one call, what a run with one tool call pays.
- `chat`: the whole path in a running chinwag, from the model's tool call to `tool_done`, as the chat client sees it
  (`tool_start` to `tool_done` on its socket; see `bench/_tools_chat.py`).

Run: ``python -m bench.tools [--calls 500]``. Target: p50 under 5 ms (`pool` and `chat`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from agents.mcp import MCPServer, MCPServerStdio, MCPServerStreamableHttp

from bench._tools_chat import chat_round_trips, sdk_round_trips
from chinwag.mcp import McpPool, parse_mcp_config

ROOT = Path(__file__).resolve().parents[1]
FAKE = [sys.executable, "-m", "tests.fakes.mcp_server"]
ENV = {"PYTHONPATH": str(ROOT)}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def _http_server() -> AsyncIterator[str]:
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        *FAKE,
        "--transport",
        "http",
        "--port",
        str(port),
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        for _ in range(400):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            break
        else:
            raise RuntimeError("the HTTP MCP server did not start")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.kill()
        await process.wait()


class _Path:
    """One way of calling `echo`: per-call wall times, and this process's CPU time per call."""

    def __init__(self, transport: str, label: str, call: Callable[[], Awaitable[object]]) -> None:
        self.transport = transport
        self.label = label
        self.call = call
        self.wall_ms: list[float] = []
        self.cpu_ms = 0.0

    async def run(self, count: int, *, record: bool) -> None:
        cpu_started = time.process_time()
        for _ in range(count):
            started = time.perf_counter()
            await self.call()
            if record:
                self.wall_ms.append((time.perf_counter() - started) * 1000)
        if record:
            self.cpu_ms += (time.process_time() - cpu_started) * 1000

    def p50(self) -> float:
        return statistics.median(self.wall_ms)

    def cpu_per_call(self) -> float:
        return self.cpu_ms / len(self.wall_ms)

    def row(self) -> str:
        times = sorted(self.wall_ms)
        p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
        return (
            f"| {self.transport} | {self.label} | {len(times)} | {self.p50():.2f} | {p99:.2f} | "
            f"{statistics.fmean(times):.2f} | {self.cpu_per_call():.3f} |"
        )


async def _measure(pool: McpPool, name: str, direct: MCPServer, calls: int, warmup: int) -> list[_Path]:
    args = {"text": "ping"}

    async def acquire_and_call() -> None:
        async with pool.acquire([name]) as tools:
            await tools.servers[0].call_tool("echo", args)

    async with pool.acquire([name]) as tools:
        pooled = tools.servers[0]
        paths = [
            _Path(name, "SDK direct", lambda: direct.call_tool("echo", args)),
            _Path(name, "pool", lambda: pooled.call_tool("echo", args)),
            _Path(name, "acquire+call", acquire_and_call),
        ]
        for path in paths:
            await path.run(warmup, record=False)
        # Blocks in turn (A B C A B C ...): load from other programs lands on every path alike.
        block = 25
        for _ in range(max(1, calls // block)):
            for path in paths:
                await path.run(block, record=True)
    return paths


def _chat_row(transport: str, label: str, times: list[float], *, cpu: str) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"| {transport} | {label} | {len(ordered)} | {statistics.median(ordered):.2f} | "
        f"{p99:.2f} | {statistics.fmean(ordered):.2f} | {cpu} |"
    )


def _machine() -> str:
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )


async def main(calls: int, warmup: int) -> None:
    async with _http_server() as url:
        config = parse_mcp_config(
            {
                "mcpServers": {
                    "stdio": {"command": FAKE[0], "args": FAKE[1:], "env": ENV, "pool_size": 2},
                    "http": {"url": url},
                }
            }
        )
        direct_stdio = MCPServerStdio(
            {"command": FAKE[0], "args": FAKE[1:], "env": ENV},
            cache_tools_list=True,
            client_session_timeout_seconds=None,
        )
        direct_http = MCPServerStreamableHttp({"url": url}, cache_tools_list=True, client_session_timeout_seconds=None)
        async with McpPool.start(config) as pool, direct_stdio, direct_http:
            await pool.wait_started()
            paths = await _measure(pool, "stdio", direct_stdio, calls, warmup)
            paths += await _measure(pool, "http", direct_http, calls, warmup)
            sdk = {
                "stdio": await sdk_round_trips(direct_stdio, calls=max(20, calls // 5)),
                "http": await sdk_round_trips(direct_http, calls=max(20, calls // 5)),
            }
        chat = await chat_round_trips(http_url=url, fake_cmd=FAKE, env=ENV, calls=max(20, calls // 5))
    print(f"Tool calls (bench/tools.py): `echo` round trip, {calls} calls per row after {warmup} warm-up")
    print(f"Machine: {_machine()}")
    print()
    print("| transport | path | calls | p50 ms | p99 ms | mean ms | chinwag CPU ms/call |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for path in paths:
        print(path.row())
    for transport, times in sdk.items():
        print(_chat_row(transport, "SDK alone: tool_called -> tool_output", times, cpu="(floor)"))
    for transport, times in chat.items():
        print(_chat_row(transport, "chat: tool_start -> tool_done", times, cpu="(server process)"))
    print()
    for direct, pooled in ((paths[0], paths[1]), (paths[3], paths[4])):
        print(
            f"{direct.transport}: the pool adds {pooled.p50() - direct.p50():+.2f} ms at p50 and "
            f"{pooled.cpu_per_call() - direct.cpu_per_call():+.3f} ms of CPU per call over the SDK alone"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    options = parser.parse_args()
    asyncio.run(main(options.calls, options.warmup))
