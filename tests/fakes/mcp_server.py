"""A small MCP server for tests and benchmarks, over stdio or streamable HTTP.

    python -m tests.fakes.mcp_server --transport stdio
    python -m tests.fakes.mcp_server --transport http --port 8765
    python -m tests.fakes.mcp_server --transport sse --port 8765     (the older SSE transport, at /sse)

Tools: `echo`, `sleep`, `fail` (an `is_error` result), `huge` (a long text), `crash` (the process dies mid-call)
and `whoami` (the process id, so tests can tell instances apart).
"""

from __future__ import annotations

import argparse
import asyncio
import os

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError


def build_server() -> MCPServer:
    server: MCPServer = MCPServer(name="chinwag-test", log_level="WARNING")

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    async def sleep(seconds: float) -> str:
        """Wait this many seconds, then answer."""
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    @server.tool()
    def fail(message: str) -> str:
        """Answer with an error result carrying the message."""
        raise ToolError(message)

    @server.tool()
    def huge(size: int) -> str:
        """Return `size` bytes of text."""
        line = "0123456789abcdefghijklmnopqrstuvwxyz" * 3 + "\n"
        return (line * (size // len(line) + 1))[:size]

    @server.tool()
    def crash() -> str:
        """Kill this server process in the middle of the call."""
        os._exit(3)

    @server.tool()
    def whoami() -> str:
        """The process id of this server instance."""
        return str(os.getpid())

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description="chinwag's test MCP server")
    parser.add_argument("--transport", choices=["stdio", "http", "sse"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    server = build_server()
    if args.transport == "stdio":
        server.run("stdio")
    elif args.transport == "sse":
        server.run("sse", host=args.host, port=args.port)
    else:
        server.run("streamable-http", host=args.host, port=args.port)


if __name__ == "__main__":
    main()
