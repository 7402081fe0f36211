"""Real MCP servers for the MCP tests: the fake server over stdio and over HTTP, mcp-server-time over stdio."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mcp.types import CallToolResult, TextContent

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
FAKE_MODULE = "tests.fakes.mcp_server"


def fake_stdio(**options: Any) -> dict[str, Any]:
    """A config entry that starts the fake server over stdio."""
    return {
        "command": sys.executable,
        "args": ["-m", FAKE_MODULE, "--transport", "stdio"],
        "env": {"PYTHONPATH": str(ROOT)},
        **options,
    }


def time_stdio(**options: Any) -> dict[str, Any]:
    """A config entry for the published mcp-server-time, over stdio."""
    return {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"], **options}


def text_of(result: CallToolResult) -> str:
    return "".join(item.text for item in result.content if isinstance(item, TextContent))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


async def wait_until_dead(pid: int, timeout_s: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while pid_alive(pid):
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


class HttpFake:
    """The fake server as a separate process serving streamable HTTP on a loopback port."""

    def __init__(self, port: int | None = None, *, transport: str = "http") -> None:
        self.port = port or free_port()
        self.transport = transport
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{'sse' if self.transport == 'sse' else 'mcp'}"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            FAKE_MODULE,
            "--transport",
            self.transport,
            "--port",
            str(self.port),
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if self.process.returncode is not None or loop.time() > deadline:
                    raise RuntimeError("the HTTP MCP server did not start") from None
                await asyncio.sleep(0.05)
            else:
                writer.close()
                await writer.wait_closed()
                return

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self.process = None


@contextlib.asynccontextmanager
async def http_fake(port: int | None = None, *, transport: str = "http") -> AsyncIterator[HttpFake]:
    server = HttpFake(port, transport=transport)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
