"""Health: live always answers; ready follows the database, recovering without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx

from chinwag.mcp import McpPool
from tests.conftest import ServerFactory
from tests.mcp.support import fake_stdio


async def test_live_and_ready(root_client: httpx.AsyncClient) -> None:
    assert (await root_client.get("/health/live")).json() == {"status": "ok"}
    ready = await root_client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ok"


class TcpProxy:
    """A loopback TCP proxy that can cut every connection and refuse new ones, like a database going away."""

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target  # (host, port), or the path of a Unix socket
        self.up = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        if isinstance(self.target, str):
            up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def cut(self) -> None:
        self.up = False
        for w in self._writers:
            w.close()
        self._writers.clear()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[TcpProxy]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        async with self._server:
            try:
                yield self
            finally:
                self.cut()


async def test_ready_is_503_while_the_database_is_unreachable_and_recovers(
    database_dsn: str, server_factory: ServerFactory
) -> None:
    parts = urlsplit(database_dsn)
    query = parse_qs(parts.query)
    target: tuple[str, int] | str
    if "host" in query:  # the embedded server listens on a Unix socket
        target = f"{query['host'][0]}/.s.PGSQL.{parts.port or 5432}"
    else:
        target = (parts.hostname or "127.0.0.1", parts.port or 5432)
    async with TcpProxy(target).running() as proxy:
        user = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
        netloc = f"{user}@127.0.0.1:{proxy.port}" if user else f"127.0.0.1:{proxy.port}"
        proxied = urlunsplit(parts._replace(netloc=netloc, query=""))
        server = await server_factory(database_url=proxied)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            assert (await http.get("/health/ready")).status_code == 200

            proxy.cut()
            down = await http.get("/health/ready")
            assert down.status_code == 503
            assert down.json()["database"] == "unreachable"
            assert (await http.get("/health/live")).status_code == 200

            proxy.up = True
            for _ in range(50):
                if (await http.get("/health/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("ready did not recover after the database came back")


async def test_ready_lists_mcp_servers_and_a_failed_one_keeps_it_ready(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    path = tmp_path / "mcp.json"
    broken = {"command": str(tmp_path / "no-such-server"), "pool_size": 1}
    path.write_text(json.dumps({"mcpServers": {"fake": fake_stdio(pool_size=1), "broken": broken}}))
    server = await server_factory(mcp_config=path)
    pool = server.app.state.mcp
    assert isinstance(pool, McpPool)
    await pool.wait_started()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        answer = await http.get("/health/ready")
    assert answer.status_code == 200
    servers = {s["name"]: s for s in answer.json()["mcp_servers"]}
    assert servers["fake"]["status"] == "ready"
    assert "echo" in servers["fake"]["tools"]
    assert servers["broken"]["status"] in ("failed", "restarting")
    assert servers["broken"]["tools"] == []
    assert servers["broken"]["error"]
